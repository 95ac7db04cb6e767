# Tokens/s against uplink bandwidth per configuration family, one panel per RTT, for one model of
# a `tandem-bench grid` run. Driven by bench/plot_grid.sh, which converts the JSON into
#   DATADIR/MODEL-rttR.dat  columns: uplink_mbps cloud spec_best split_f32_best split_int8_best auto
# ("?" where a configuration has no measurement) and DATADIR/MODEL.gp, which sets `rtts` (a
# space-separated list), `panels` (how many), `panel_R` (each panel's title), `model_title` and
# `out`.
load sprintf("%s/%s.gp", datadir, model)
set terminal pngcairo size 1400, 80 + 460 * ((panels + 1) / 2) font ",11" noenhanced
set output out
set datafile missing "?"
set multiplot layout (panels + 1) / 2, 2 title model_title font ",13"
set logscale x 10
set logscale y 10
unset xlabel  # (the key sits below each panel; the panel titles name the axis)
set ylabel "tokens/s (median)"
set grid xtics ytics mxtics mytics lc rgb "#dddddd"
set key below horizontal maxrows 1 width -1 font ",9"
set format y "%g"
set xrange [0.3:170]

do for [r in rtts] {
  f = sprintf("%s/%s-rtt%s.dat", datadir, model, r)
  set title value(sprintf("panel_%s", r))
  plot f using 1:2 with linespoints lw 2 pt 7 lc rgb "#555555" title "cloud", \
       f using 1:3 with linespoints lw 2 pt 5 lc rgb "#1f77b4" title "spec (best gamma)", \
       f using 1:4 with linespoints lw 2 pt 9 lc rgb "#2ca02c" title "split f32 (best k)", \
       f using 1:5 with linespoints lw 2 pt 11 lc rgb "#9467bd" title "split int8 (best k)", \
       f using 1:6 with linespoints lw 3 dt 2 pt 6 ps 1.6 lc rgb "#d62728" title "auto"
}
unset multiplot
