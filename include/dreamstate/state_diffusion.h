/* The part-A commands around the state DiT: sample-state, interpolate-state, edit-state, eval-states
 * (its model file: state_dit_file.h). */
#ifndef DREAMSTATE_STATE_DIFFUSION_H
#define DREAMSTATE_STATE_DIFFUSION_H

/* Subcommands (argv[0] is the subcommand name); each returns the exit code. */
int ds_sample_state_main(int argc, char **argv);
int ds_interpolate_state_main(int argc, char **argv);
int ds_edit_state_main(int argc, char **argv);
int ds_eval_states_main(int argc, char **argv);

#endif
