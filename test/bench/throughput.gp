# Throughput per variant: bars = median of the runs, whiskers = slowest
# and fastest run.
#
#   gnuplot -e "datafile='results/throughput.dat'; outfile='results/throughput.png'; \
#               subtitle='...'; note='...'; ymax=N" throughput.gp
#
# datafile columns: "label" median min max group (0 = a variant of the issue,
# 1 = a reference row); written by bench.py.

if (!exists("datafile")) datafile = 'results/throughput.dat'
if (!exists("outfile")) outfile = 'results/throughput.png'
if (!exists("subtitle")) subtitle = ''
if (!exists("note")) note = ''
if (!exists("ymax")) ymax = 0

set terminal pngcairo size 1000,540 font 'sans,10' noenhanced
set output outfile
set title "pg_streamagg benchmark: throughput per variant\n".subtitle
set style fill solid 0.85 border -1
set boxwidth 0.6
set xtics rotate by -25 nomirror
set ytics nomirror
set grid ytics lc rgb '#dddddd'
set ylabel 'thousand messages per second'
set format y '%.0f'
# ymax (thousand msg/s) keeps one outlier round from squashing the bars;
# whiskers beyond it are clipped
if (ymax > 0) set yrange [0:ymax]; else set yrange [0:*]
set offsets 0, 0, graph 0.08, 0
set key off
set bmargin 9
set rmargin 16
if (note ne '') set label 1 note at graph 0.99, graph 0.95 right font ',9'

plot datafile using 0:($2/1000):($5 == 0 ? 0x3b6ea5 : 0xa0a0a0):xtic(1) \
          with boxes lc rgb variable, \
     '' using 0:($2/1000):($3/1000):($4/1000) with yerrorbars lc rgb '#333333' pt 0, \
     '' using 0:(ymax > 0 && $4/1000 > 0.9*ymax ? $2/1000 : $4/1000):(sprintf('%.0fk', $2/1000)) \
          with labels offset 1.8,0.8 font ',9'
