// Runs Catch2's session (defined in catch_impl.cpp: Catch::Session is only
// declared in the translation unit that holds the implementation).
#pragma once

int warren_catch_run(int argc, char** argv);
