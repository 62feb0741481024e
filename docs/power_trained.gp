# Power decomposition of normalized pre-activations against depth (written by
# `proxynorm power --plot`; docs/power.md). Run again with: gnuplot THIS_FILE
set encoding utf8
set datafile separator ','
csv = 'docs/power_trained.csv'
c1 = '#b2182b'
t1 = '(E_x μ_c)^2  channel-wise squared mean'
c2 = '#f4a582'
t2 = 'Var_x μ_c  variance of instance means'
c3 = '#4393c3'
t3 = '(E_x σ_c)^2  squared mean of instance stds'
c4 = '#053061'
t4 = 'Var_x σ_c  variance of instance stds'
set style fill solid 0.95 noborder
if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {
    set terminal pngcairo size 1200,800 enhanced font ',10' background rgb 'white'
} else {
    set terminal png size 1200,800 enhanced font ',10' background rgb 'white'
}
set output 'docs/power_trained.png'
set border
set tics
set tics front
set xlabel 'layer'
set grid front lc rgb '#dddddd'
set xrange [1:19]
set ylabel 'power'
unset logscale y
set format y '%g'
set yrange [0:*]
set multiplot layout 2,4 title 'Power of the normalized pre-activations, trained resnet20, 10000 test images of fashion-mnist, BN running statistics' noenhanced font ',13'
set title 'bn_g128' noenhanced font ',12'
unset key
plot csv skip 1 every ::0::18 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::0::18 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::0::18 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::0::18 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'bn_g4' noenhanced font ',12'
unset key
plot csv skip 1 every ::19::37 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::19::37 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::19::37 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::19::37 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'gn' noenhanced font ',12'
unset key
plot csv skip 1 every ::38::56 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::38::56 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::38::56 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::38::56 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'ln' noenhanced font ',12'
unset key
plot csv skip 1 every ::57::75 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::57::75 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::57::75 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::57::75 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'gn_pn' noenhanced font ',12'
unset key
plot csv skip 1 every ::76::94 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::76::94 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::76::94 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::76::94 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'ln_pn' noenhanced font ',12'
unset key
plot csv skip 1 every ::95::113 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::95::113 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::95::113 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::95::113 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
unset title
unset border
unset tics
unset xlabel
unset ylabel
unset grid
unset logscale y
set xrange [0:1]
set yrange [0:1]
set key center center vertical Left reverse samplen 2 spacing 1.5 font ',11'
plot for [i=1:4] NaN with filledcurves x1 lc rgb value('c'.i) title value('t'.i)
unset multiplot
set output
set terminal svg size 1200,800 enhanced font 'Helvetica,10' background rgb 'white'
set output 'docs/power_trained.svg'
set border
set tics
set tics front
set xlabel 'layer'
set grid front lc rgb '#dddddd'
set xrange [1:19]
set ylabel 'power'
unset logscale y
set format y '%g'
set yrange [0:*]
set multiplot layout 2,4 title 'Power of the normalized pre-activations, trained resnet20, 10000 test images of fashion-mnist, BN running statistics' noenhanced font ',13'
set title 'bn_g128' noenhanced font ',12'
unset key
plot csv skip 1 every ::0::18 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::0::18 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::0::18 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::0::18 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'bn_g4' noenhanced font ',12'
unset key
plot csv skip 1 every ::19::37 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::19::37 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::19::37 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::19::37 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'gn' noenhanced font ',12'
unset key
plot csv skip 1 every ::38::56 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::38::56 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::38::56 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::38::56 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'ln' noenhanced font ',12'
unset key
plot csv skip 1 every ::57::75 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::57::75 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::57::75 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::57::75 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'gn_pn' noenhanced font ',12'
unset key
plot csv skip 1 every ::76::94 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::76::94 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::76::94 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::76::94 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'ln_pn' noenhanced font ',12'
unset key
plot csv skip 1 every ::95::113 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::95::113 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::95::113 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::95::113 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
unset title
unset border
unset tics
unset xlabel
unset ylabel
unset grid
unset logscale y
set xrange [0:1]
set yrange [0:1]
set key center center vertical Left reverse samplen 2 spacing 1.5 font ',11'
plot for [i=1:4] NaN with filledcurves x1 lc rgb value('c'.i) title value('t'.i)
unset multiplot
set output
