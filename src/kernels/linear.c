/* Fully connected layer by OpenBLAS sgemm (row-major, weight (Out,In) as in PyTorch). */
#include <cblas.h>

#include "common.h"
#include "layers.h"

// inp (N,In), weight (Out,In), bias (Out) or NULL, out (N,Out) = inp x weight^T + bias
int pn_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                      int N, int In, int Out)
{
    PN_CHECK_PTR(out);
    PN_CHECK_PTR(inp);
    PN_CHECK_PTR(weight);
    PN_CHECK_POS(N);
    PN_CHECK_POS(In);
    PN_CHECK_POS(Out);
    float beta = 0.0f;
    if (bias) {
        #pragma omp parallel for schedule(static) if ((long)N * Out >= 16384)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < Out; o++) out[(size_t)n * Out + o] = bias[o];
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, Out, In, 1.0f, inp, In, weight, In,
                beta, out, Out);
    return PN_OK;
}

// dout (N,Out); dinp (N,In) written (or NULL); dweight (Out,In), dbias (Out) or NULL accumulated
int pn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                       const float *inp, const float *weight, int N, int In, int Out)
{
    PN_CHECK_PTR(dweight);
    PN_CHECK_PTR(dout);
    PN_CHECK_PTR(inp);
    PN_CHECK_PTR(weight);
    PN_CHECK_POS(N);
    PN_CHECK_POS(In);
    PN_CHECK_POS(Out);
    /* dinp = dout x weight */
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, In, Out, 1.0f, dout, Out, weight,
                    In, 0.0f, dinp, In);
    /* dweight += dout^T x inp */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Out, In, N, 1.0f, dout, Out, inp, In, 1.0f,
                dweight, In);
    if (dbias) {
        #pragma omp parallel for schedule(static) if ((long)N * Out >= 16384)
        for (int o = 0; o < Out; o++) {
            double acc = 0.0;
            for (int n = 0; n < N; n++) acc += dout[(size_t)n * Out + o];
            dbias[o] += (float)acc;
        }
    }
    return PN_OK;
}
