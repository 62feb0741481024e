/* GroupNorm (no affine) followed by PN-Act, forward and backward, with the public API.
 * Build: cc -O2 examples/quickstart.c -Iinclude build/libproxynorm.a -fopenmp -lopenblas -lm */
#include <stdio.h>
#include <stdlib.h>

#include "proxynorm.h"

int main(void)
{
    enum { N = 2, C = 8, HW = 16, G = 4 };
    float *x = malloc(sizeof(float) * N * C * HW), *out = malloc(sizeof(float) * N * C * HW);
    float *dout = malloc(sizeof(float) * N * C * HW), *dx = malloc(sizeof(float) * N * C * HW);
    float mean[N * G], rstd[N * G], m[C], s[C];
    float gamma[C], beta[C], gamma_t[C], beta_t[C];             /* PN-Act parameters */
    float dgamma[C] = {0}, dbeta[C] = {0}, dgamma_t[C] = {0}, dbeta_t[C] = {0};
    for (int c = 0; c < C; c++) { gamma[c] = 1; beta[c] = 0; gamma_t[c] = 0; beta_t[c] = 0; }
    for (int i = 0; i < N * C * HW; i++) { x[i] = (float)(i % 7) - 3; dout[i] = 1.0f; }

    pn_pnact_params p = { gamma, beta, gamma_t, beta_t };
    pn_pnact_grads g = { dgamma, dbeta, dgamma_t, dbeta_t };
    int rc = pn_gn_pnact_forward(out, mean, rstd, m, s, x, p, N, C, HW, G, 1e-3f,
                                 PN_ACT_RELU, PN_PROXY_EPS);
    if (rc == PN_OK)
        rc = pn_gn_pnact_backward(dx, g, dout, x, mean, rstd, m, s, p, N, C, HW, G, PN_ACT_RELU);
    if (rc != PN_OK) fprintf(stderr, "error: %s\n", pn_last_error());
    else printf("out[0] = %f, dgamma_t[0] = %f\n", out[0], dgamma_t[0]);

    /* Errors are return codes with a message, never a crash: */
    rc = pn_groupnorm_forward(out, mean, rstd, x, NULL, NULL, N, C, HW, 3, 1e-3f);
    printf("C %% G != 0 -> %s: %s\n", pn_status_str(rc), pn_last_error());
    free(x); free(out); free(dout); free(dx);
    return 0;
}
