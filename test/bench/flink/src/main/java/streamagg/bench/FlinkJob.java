package streamagg.bench;

import java.lang.management.ManagementFactory;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.table.api.TableResult;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;

/**
 * The Flink SQL peer of the pg_streamagg benchmark: the benchmark's one-window
 * job (1-minute tumbling windows of event time, count(*) and sum(bytes) by ip)
 * written the way a Flink user writes it, run on a local MiniCluster.
 *
 * <pre>
 * java -cp 'flink-bench.jar:lib/*' streamagg.bench.FlinkJob \
 *     --brokers HOST:PORT --topic T --jdbc-url URL --jdbc-user U --table T \\
 *     [--jdbc-password P] \
 *     [--parallelism 2] [--flush-rows 5000] [--checkpoint-ms 0]
 * </pre>
 *
 * The Kafka source starts at the earliest offsets and is bounded at the latest
 * offsets of the moment the job starts, so the job ends by itself. The result
 * goes through Flink's JDBC connector in upsert mode (PRIMARY KEY NOT ENFORCED:
 * INSERT ... ON CONFLICT on PostgreSQL) into a table that must already exist.
 * Prints one line of JSON: the time from submitting the INSERT to the job's
 * end, the JVM's start-up and the process's CPU time.
 */
public final class FlinkJob {
    private FlinkJob() {
    }

    private static String sqlString(String s) {
        return "'" + s.replace("'", "''") + "'";
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>();
        a.put("--parallelism", "2");
        a.put("--flush-rows", "5000");
        a.put("--checkpoint-ms", "0");
        a.put("--group", "bench.flink");
        a.put("--jdbc-user", "postgres");
        a.put("--jdbc-password", "");
        for (int i = 0; i + 1 < argv.length; i += 2) {
            a.put(argv[i], argv[i + 1]);
        }
        for (String k : new String[] {"--brokers", "--topic", "--jdbc-url", "--table"}) {
            if (!a.containsKey(k)) {
                System.err.println("FlinkJob: missing " + k);
                System.exit(2);
            }
        }
        long jvmStart = ManagementFactory.getRuntimeMXBean().getStartTime();
        int parallelism = Integer.parseInt(a.get("--parallelism"));

        Configuration conf = new Configuration();
        conf.setString("table.local-time-zone", "UTC");
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        env.setParallelism(parallelism);
        long checkpointMs = Long.parseLong(a.get("--checkpoint-ms"));
        if (checkpointMs > 0) {
            env.enableCheckpointing(checkpointMs);
        }
        StreamTableEnvironment tenv = StreamTableEnvironment.create(env);

        tenv.executeSql(
            "CREATE TABLE access_log (\n"
            + "  ip STRING,\n"
            + "  status INT,\n"
            + "  `bytes` BIGINT,\n"
            + "  url STRING,\n"
            + "  ts TIMESTAMP_LTZ(3),\n"
            + "  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND\n"
            + ") WITH (\n"
            + "  'connector' = 'kafka',\n"
            + "  'topic' = " + sqlString(a.get("--topic")) + ",\n"
            + "  'properties.bootstrap.servers' = " + sqlString(a.get("--brokers")) + ",\n"
            + "  'properties.group.id' = " + sqlString(a.get("--group")) + ",\n"
            + "  'scan.startup.mode' = 'earliest-offset',\n"
            + "  'scan.bounded.mode' = 'latest-offset',\n"
            + "  'format' = 'json',\n"
            + "  'json.timestamp-format.standard' = 'ISO-8601',\n"
            + "  'json.fail-on-missing-field' = 'false',\n"
            + "  'json.ignore-parse-errors' = 'false'\n"
            + ")");
        tenv.executeSql(
            "CREATE TABLE hits_sink (\n"
            + "  window_start TIMESTAMP(3),\n"
            + "  window_end TIMESTAMP(3),\n"
            + "  ip STRING,\n"
            + "  hits BIGINT,\n"
            + "  `bytes` BIGINT,\n"
            + "  PRIMARY KEY (window_start, ip) NOT ENFORCED\n"
            + ") WITH (\n"
            + "  'connector' = 'jdbc',\n"
            + "  'url' = " + sqlString(a.get("--jdbc-url")) + ",\n"
            + "  'username' = " + sqlString(a.get("--jdbc-user")) + ",\n"
            + "  'password' = " + sqlString(a.get("--jdbc-password")) + ",\n"
            + "  'table-name' = " + sqlString(a.get("--table")) + ",\n"
            + "  'sink.buffer-flush.max-rows' = " + sqlString(a.get("--flush-rows")) + ",\n"
            + "  'sink.buffer-flush.interval' = '1s'\n"
            + ")");

        long submit = System.nanoTime();
        TableResult result = tenv.executeSql(
            "INSERT INTO hits_sink\n"
            + "SELECT window_start, window_end, ip, COUNT(*) AS hits, SUM(`bytes`) AS `bytes`\n"
            + "FROM TABLE(TUMBLE(TABLE access_log, DESCRIPTOR(ts), INTERVAL '1' MINUTE))\n"
            + "GROUP BY window_start, window_end, ip");
        result.await();
        long end = System.nanoTime();

        double cpu = 0;
        java.lang.management.OperatingSystemMXBean os = ManagementFactory.getOperatingSystemMXBean();
        if (os instanceof com.sun.management.OperatingSystemMXBean) {
            cpu = ((com.sun.management.OperatingSystemMXBean) os).getProcessCpuTime() / 1e9;
        }
        long submitWall = System.currentTimeMillis() - (end - submit) / 1_000_000;
        System.out.printf(java.util.Locale.ROOT,
            "{\"seconds\": %.4f, \"jvm_to_submit_s\": %.3f, \"cpu_s\": %.2f, "
            + "\"parallelism\": %d, \"flink\": \"%s\"}%n",
            (end - submit) / 1e9, (submitWall - jvmStart) / 1e3, cpu, parallelism,
            org.apache.flink.runtime.util.EnvironmentInformation.getVersion());
        System.exit(0);
    }
}
