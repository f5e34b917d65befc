/* ctl_args: hermesctl's command line: global options, the sub-command table, and the
 * request each sub-command sends. */
#ifndef CTL_ARGS_H_INCLUDED
#define CTL_ARGS_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>

#define CTL_EXIT_OK          0
#define CTL_EXIT_REFUSED     1
#define CTL_EXIT_USAGE       2
#define CTL_EXIT_UNREACHABLE 3

typedef struct ctl_command ctl_command_t;

/* Sub-command flags one command line may carry. */
#define CTL_MAX_FLAGS 16

typedef struct {
    const char *controller;
    const char *keys_dir;
    int timeout_ms;
    bool json;
    const ctl_command_t *command;
    const char *pos[8];
    int npos;
    const char *flag_names[CTL_MAX_FLAGS];
    char flag_name_store[CTL_MAX_FLAGS][48]; /* names of --name=value flags */
    const char *flag_values[CTL_MAX_FLAGS];
    int nflags;
} ctl_args_t;

/* How the result of a command is printed as a table. */
typedef void (ctl_print_fn) (const json_t *result);
/* Builds the request body from parsed arguments; NULL with err on bad arguments. */
typedef json_t *(ctl_build_fn) (const ctl_args_t *args, char *err, size_t errlen);

struct ctl_command {
    const char *words; /* "node add" */
    const char *synopsis;
    const char *type; /* message type sent; NULL for local commands */
    int min_pos, max_pos;
    const char *flags; /* allowed sub-command flags, comma separated */
    ctl_build_fn *build;
    ctl_print_fn *print;
};

/* Parses argv. 0 on success; -1 with err on a usage error; 1 when help was asked. */
int ctl_args_parse (ctl_args_t *args, int argc, char **argv, char *err, size_t errlen);
/* The value of a sub-command flag, or NULL. */
const char *ctl_args_flag (const ctl_args_t *args, const char *name);
void ctl_args_usage (FILE *out);

#endif
