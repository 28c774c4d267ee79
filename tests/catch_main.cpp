// main() of the unit and e2e test programs; Catch2 itself is in catch_impl.cpp.
#include "catch_run.h"

int main(int argc, char** argv) { return warren_catch_run(argc, argv); }
