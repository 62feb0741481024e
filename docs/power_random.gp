# Power decomposition of normalized pre-activations against depth (written by
# `proxynorm power --plot`; docs/power.md). Run again with: gnuplot THIS_FILE
set encoding utf8
set datafile separator ','
csv = 'docs/power_random.csv'
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
set output 'docs/power_random.png'
set border
set tics
set tics front
set xlabel 'layer'
set grid front lc rgb '#dddddd'
set xrange [1:50]
set ylabel 'power'
unset logscale y
set format y '%g'
set yrange [0:*]
set multiplot layout 2,4 title 'Power of the normalized pre-activations, random network (width 128, image 16, batch 32, seed 0)' noenhanced font ',13'
set title 'bn' noenhanced font ',12'
unset key
plot csv skip 1 every ::0::49 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::0::49 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::0::49 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::0::49 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'ln' noenhanced font ',12'
unset key
plot csv skip 1 every ::50::99 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::50::99 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::50::99 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::50::99 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'in' noenhanced font ',12'
unset key
plot csv skip 1 every ::100::149 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::100::149 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::100::149 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::100::149 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'gn' noenhanced font ',12'
unset key
plot csv skip 1 every ::150::199 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::150::199 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::150::199 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::150::199 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'ln+pn' noenhanced font ',12'
unset key
plot csv skip 1 every ::200::249 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::200::249 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::200::249 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::200::249 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'gn+pn' noenhanced font ',12'
unset key
plot csv skip 1 every ::250::299 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::250::299 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::250::299 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::250::299 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'ln+ws' noenhanced font ',12'
unset key
plot csv skip 1 every ::300::349 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::300::349 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::300::349 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::300::349 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
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
set output 'docs/power_random.svg'
set border
set tics
set tics front
set xlabel 'layer'
set grid front lc rgb '#dddddd'
set xrange [1:50]
set ylabel 'power'
unset logscale y
set format y '%g'
set yrange [0:*]
set multiplot layout 2,4 title 'Power of the normalized pre-activations, random network (width 128, image 16, batch 32, seed 0)' noenhanced font ',13'
set title 'bn' noenhanced font ',12'
unset key
plot csv skip 1 every ::0::49 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::0::49 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::0::49 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::0::49 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'ln' noenhanced font ',12'
unset key
plot csv skip 1 every ::50::99 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::50::99 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::50::99 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::50::99 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'in' noenhanced font ',12'
unset key
plot csv skip 1 every ::100::149 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::100::149 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::100::149 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::100::149 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'gn' noenhanced font ',12'
unset key
plot csv skip 1 every ::150::199 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::150::199 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::150::199 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::150::199 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'ln+pn' noenhanced font ',12'
unset key
plot csv skip 1 every ::200::249 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::200::249 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::200::249 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::200::249 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'gn+pn' noenhanced font ',12'
unset key
plot csv skip 1 every ::250::299 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::250::299 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::250::299 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::250::299 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
set title 'ln+ws' noenhanced font ',12'
unset key
plot csv skip 1 every ::300::349 using 2:(0):3 with filledcurves lc rgb c1 title t1, \
     csv skip 1 every ::300::349 using 2:3:($3+$4) with filledcurves lc rgb c2 title t2, \
     csv skip 1 every ::300::349 using 2:($3+$4):($3+$4+$5) with filledcurves lc rgb c3 title t3, \
     csv skip 1 every ::300::349 using 2:($3+$4+$5):($3+$4+$5+$6) with filledcurves lc rgb c4 title t4
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
