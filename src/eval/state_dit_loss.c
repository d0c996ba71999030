/* Held-out denoising loss of a state DiT (eval.h: ds_state_dit_eps_mse), the `state_diffusion` task's
 * evaluation and eval-states' first measure. */
#include "dreamstate/eval.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"

enum { RNG_STREAM_EVAL = 0x4556414c /* "EVAL" */ };
const int ds_state_dit_eval_steps[DS_STATE_DIT_EVAL_STEPS] = {49, 249, 499, 749, 949};

void ds_state_dit_eps_mse(ds_state_dit *s, const ds_states *set, int64_t n_records, uint64_t seed, int part, int parts,
                          int B, double *sums) {
    int64_t N = ds_states_get_info(set)->n_records, X = s->x_floats, V = s->dit.d.cond_dim ? s->dit.d.cond_dim : 1;
    if (n_records > N) n_records = N;
    float *x0 = ds_alloc(sizeof(float) * B * X), *xt = ds_alloc(sizeof(float) * B * X);
    float *noise = ds_alloc(sizeof(float) * B * X), *vec = ds_alloc(sizeof(float) * B * V);
    int32_t *t = ds_alloc(sizeof(int32_t) * B), *labels = ds_alloc(sizeof(int32_t) * B);
    ds_dit_cond cond = {.labels = s->dit.d.num_classes ? labels : NULL, .vec = s->dit.d.cond_dim ? vec : NULL};
    for (int64_t first = (int64_t)part * B; first < n_records; first += (int64_t)parts * B) {
        int n = (int)(n_records - first < B ? n_records - first : B);
        for (int b = 0; b < n; b++) {
            int64_t r = (first + b) * N / n_records;  /* evenly spread; the noise belongs to the record */
            ds_state_record rec = ds_states_record(set, r);
            ds_state_dit_encode(s, rec.state, x0 + b * X);
            ds_state_dit_record_cond(s, &rec, &labels[b], vec + b * s->dit.d.cond_dim);
            ds_fill_normal_at(noise + b * X, X, 1.0, seed, RNG_STREAM_EVAL, (uint64_t)r * (uint64_t)X);
        }
        for (int k = 0; k < DS_STATE_DIT_EVAL_STEPS; k++) {
            for (int b = 0; b < n; b++) t[b] = ds_state_dit_eval_steps[k];
            ds_q_sample(&s->process, n, X, t, x0, noise, xt);
            ds_state_dit_target(s, n, t, x0, noise);
            double loss = ds_dit_forward(&s->dit, n, xt, t, &cond, noise, NULL);
            sums[k] += ds_state_dit_eps_mse_of_loss(s, t[0], loss) * n;
        }
        sums[DS_STATE_DIT_EVAL_STEPS] += n;
    }
    ds_free(x0); ds_free(xt); ds_free(noise); ds_free(vec); ds_free(t); ds_free(labels);
}
