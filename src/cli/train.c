/* `dreamstate train CONFIG`: the task of run.task, under mpirun or alone. */
#include "args.h"
#include "commands.h"

#include "dreamstate/config.h"
#include "dreamstate/dist.h"
#include "dreamstate/train.h"

#include <string.h>

static const cli_spec spec = {
    .cmd = "train",
    .usage = "usage: dreamstate train CONFIG [--set section.key=value]...\n"
             "Trains as configured; writes OUT/config.yaml (resolved), OUT/train.jsonl (one line per step)\n"
             "and checkpoints to checkpoint.dir. Rerunning resumes from the newest valid checkpoint; a fresh\n"
             "start over an earlier run is refused (exit 2) unless checkpoint.resume is restart, which moves\n"
             "the earlier run's files to OUT.old-N/.\n"
             "SIGUSR1/SIGTERM/SIGINT: finish the step, write a checkpoint, exit 0; a second SIGTERM/SIGINT,\n"
             "or one before the first step: exit at once (status 128 + signal number), the last checkpoint\n"
             "intact.\n"
             "A NaN or Inf loss or gradient norm stops the run before the update, exit 1 (train.skip_nonfinite\n"
             "skips up to N such steps in a row); checkpoints are only written with finite weights.\n",
    .config = 1,
    .mpi = 1,
};

int cmd_train(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    ds_config cfg;
    cli_load_config(&a, &cfg);
    cli_args_free(&a);
    if (ds_dist_rank() == 0) ds_config_check_run_dirs(&cfg);  /* rank 0 makes them */
    int rc;
    if (strcmp(cfg.run.task, "lm") == 0) rc = ds_train_lm(&cfg);
    else if (strcmp(cfg.run.task, "state_diffusion") == 0) rc = ds_train_state_diffusion(&cfg);
    else if (strcmp(cfg.run.task, "hybrid") == 0) rc = ds_train_hybrid(&cfg);
    else rc = ds_train_state_tuning(&cfg);  /* the config accepts no other run.task */
    ds_dist_finalize();
    return rc;
}
