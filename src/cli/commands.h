/* The commands of the dreamstate binary, one file each in src/cli (private to src/cli). Each takes
 * argv[0] = its own name and returns the exit code; bad input exits 2 with one line. */
#ifndef DREAMSTATE_CLI_COMMANDS_H
#define DREAMSTATE_CLI_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_prepare_data(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_build_contexts(int argc, char **argv);
int cmd_extract_states(int argc, char **argv);
int cmd_analyze_states(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_sample_state(int argc, char **argv);
int cmd_interpolate_state(int argc, char **argv);
int cmd_edit_state(int argc, char **argv);
int cmd_eval_states(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_config_help(int argc, char **argv);

#endif
