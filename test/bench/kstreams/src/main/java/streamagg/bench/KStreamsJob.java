package streamagg.bench;

import java.io.BufferedWriter;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.time.Duration;
import java.time.Instant;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.databind.ObjectMapper;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.TimestampExtractor;

/**
 * The Kafka Streams peer of the pg_streamagg benchmark: count and sum(bytes) of
 * the access-log messages by ip in 1-minute tumbling windows of event time,
 * processing.guarantee = exactly_once_v2, results (one update per window, ip
 * and commit) to an output topic.
 *
 * <pre>
 * java -cp 'kstreams-bench.jar:lib/*' streamagg.bench.KStreamsJob \
 *     --brokers HOST:PORT --topic IN --output OUT --app-id ID --state-dir DIR \
 *     --messages N [--threads 2] [--rows FILE] [--timeout-s 600]
 * </pre>
 *
 * The clock runs from KafkaStreams.start() until a read_committed consumer of
 * the output topic has seen, in the latest update of every (window, ip), hits
 * adding up to N: every input message has then been consumed and its
 * transaction committed. With --rows, the final rows are written as
 * tab-separated window_start (epoch ms), ip, hits, bytes. Prints one line of
 * JSON.
 */
public final class KStreamsJob {
    private KStreamsJob() {
    }

    /** One access-log message; only the fields the job uses. */
    @JsonIgnoreProperties(ignoreUnknown = true)
    public static final class LogRecord {
        public String ip;
        public long bytes;
        public String ts;
        public transient long tsMillis = -1;

        long eventTime() {
            if (tsMillis < 0) {
                tsMillis = Instant.parse(ts).toEpochMilli();
            }
            return tsMillis;
        }
    }

    static final class JsonDeserializer implements Deserializer<LogRecord> {
        private final ObjectMapper mapper = new ObjectMapper();

        @Override
        public LogRecord deserialize(String topic, byte[] data) {
            try {
                return data == null ? null : mapper.readValue(data, LogRecord.class);
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        }
    }

    /** The window aggregate: hits and the sum of bytes, 16 bytes. */
    static final class Agg {
        long hits;
        long bytes;
    }

    static final class AggSerde implements Serde<Agg> {
        @Override
        public Serializer<Agg> serializer() {
            return (topic, a) -> ByteBuffer.allocate(16).putLong(a.hits).putLong(a.bytes).array();
        }

        @Override
        public Deserializer<Agg> deserializer() {
            return (topic, data) -> {
                if (data == null) {
                    return null;
                }
                ByteBuffer b = ByteBuffer.wrap(data);
                Agg a = new Agg();
                a.hits = b.getLong();
                a.bytes = b.getLong();
                return a;
            };
        }
    }

    /** Event time from the message's ts (the value is already deserialized). */
    public static final class EventTime implements TimestampExtractor {
        @Override
        public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
            Object v = record.value();
            return v instanceof LogRecord ? ((LogRecord) v).eventTime() : record.timestamp();
        }
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>();
        a.put("--threads", "2");
        a.put("--timeout-s", "600");
        for (int i = 0; i + 1 < argv.length; i += 2) {
            a.put(argv[i], argv[i + 1]);
        }
        for (String k : new String[] {"--brokers", "--topic", "--output", "--app-id",
                                      "--state-dir", "--messages"}) {
            if (!a.containsKey(k)) {
                System.err.println("KStreamsJob: missing " + k);
                System.exit(2);
            }
        }
        long expected = Long.parseLong(a.get("--messages"));
        String output = a.get("--output");

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, a.get("--app-id"));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.get("--brokers"));
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(a.get("--threads")));
        p.put(StreamsConfig.STATE_DIR_CONFIG, a.get("--state-dir"));
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

        Serde<LogRecord> logSerde = Serdes.serdeFrom(
            (topic, r) -> {
                throw new UnsupportedOperationException("LogRecord is never serialized");
            },
            new JsonDeserializer());
        Serde<Agg> aggSerde = new AggSerde();

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(a.get("--topic"), Consumed.with(Serdes.ByteArray(), logSerde)
                           .withTimestampExtractor(new EventTime()))
            .map((k, r) -> KeyValue.pair(r.ip, r.bytes))
            .groupByKey(Grouped.with(Serdes.String(), Serdes.Long()))
            // the repartitioned stream mixes the input partitions: a grace period
            // long enough that no message of the topic arrives too late
            .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMinutes(1), Duration.ofHours(1)))
            .aggregate(Agg::new,
                       (ip, nbytes, agg) -> {
                           agg.hits++;
                           agg.bytes += nbytes;
                           return agg;
                       },
                       Materialized.with(Serdes.String(), aggSerde))
            .toStream()
            .map((w, agg) -> KeyValue.pair(w.window().start() + "\t" + w.key(),
                                           agg.hits + "\t" + agg.bytes))
            .to(output, Produced.with(Serdes.String(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(builder.build(), p);
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, a.get("--brokers"));
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, a.get("--app-id") + ".reader");
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        Map<String, long[]> latest = new HashMap<>();
        long sumHits = 0;
        long timeoutNs = Long.parseLong(a.get("--timeout-s")) * 1_000_000_000L;

        long start = System.nanoTime();
        streams.start();
        try (KafkaConsumer<String, String> reader =
                 new KafkaConsumer<>(cp, new StringDeserializer(), new StringDeserializer())) {
            reader.subscribe(List.of(output));
            while (sumHits < expected) {
                if (System.nanoTime() - start > timeoutNs) {
                    System.err.println("KStreamsJob: timed out with " + sumHits + " of "
                                       + expected + " messages in the output");
                    streams.close(Duration.ofSeconds(10));
                    System.exit(1);
                }
                if (streams.state() == KafkaStreams.State.ERROR
                    || streams.state() == KafkaStreams.State.NOT_RUNNING) {
                    System.err.println("KStreamsJob: streams state " + streams.state());
                    System.exit(1);
                }
                for (ConsumerRecord<String, String> r : reader.poll(Duration.ofMillis(50))) {
                    String[] v = r.value().split("\t");
                    long[] now = {Long.parseLong(v[0]), Long.parseLong(v[1])};
                    long[] before = latest.put(r.key(), now);
                    sumHits += now[0] - (before == null ? 0 : before[0]);
                }
            }
        }
        long end = System.nanoTime();
        double cpu = 0;
        java.lang.management.OperatingSystemMXBean os = ManagementFactory.getOperatingSystemMXBean();
        if (os instanceof com.sun.management.OperatingSystemMXBean) {
            cpu = ((com.sun.management.OperatingSystemMXBean) os).getProcessCpuTime() / 1e9;
        }
        streams.close(Duration.ofSeconds(30));
        if (a.containsKey("--rows")) {
            try (BufferedWriter w = Files.newBufferedWriter(Paths.get(a.get("--rows")),
                                                            StandardCharsets.UTF_8)) {
                for (Map.Entry<String, long[]> e : latest.entrySet()) {
                    w.write(e.getKey() + "\t" + e.getValue()[0] + "\t" + e.getValue()[1] + "\n");
                }
            }
        }
        System.out.printf(java.util.Locale.ROOT,
            "{\"seconds\": %.4f, \"cpu_s\": %.2f, \"rows\": %d, \"messages\": %d, "
            + "\"threads\": %s, \"kafka_streams\": \"%s\"}%n",
            (end - start) / 1e9, cpu, latest.size(), sumHits, a.get("--threads"),
            org.apache.kafka.common.utils.AppInfoParser.getVersion());
        System.exit(0);
    }
}
