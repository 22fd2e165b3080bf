/*
** main.c: the usersync command. Everything happens in the Lua host
** (runtime/host.c) and the built-in `usersync.cli` module.
*/
#include "usersync/host.h"

int main(int argc, char **argv) { return us_host_main(argc, argv); }
