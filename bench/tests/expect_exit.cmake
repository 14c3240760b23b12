# Runs a command and checks its exit status and stderr: moe-bench's bad-flag and
# does-not-fit paths must end with a clear message and a given non-zero status, never a crash.
# EXPECT_OUT (optional) is a regex stdout must match: what a successful run reports.
#   cmake -DCMD=<program|arg|arg...> -DEXPECT_RC=<n> [-DEXPECT_ERR=<regex>] [-DEXPECT_OUT=<regex>]
#         -P expect_exit.cmake
# (arguments separated by '|', which survives add_test where ';' would not)
string(REPLACE "|" ";" cmd "${CMD}")
execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc STREQUAL "${EXPECT_RC}")
  message(FATAL_ERROR "exit status ${rc}, expected ${EXPECT_RC}\nstdout:\n${out}\nstderr:\n${err}")
endif()
if(DEFINED EXPECT_ERR AND NOT err MATCHES "${EXPECT_ERR}")
  message(FATAL_ERROR "stderr does not match '${EXPECT_ERR}':\n${err}")
endif()
if(DEFINED EXPECT_OUT AND NOT out MATCHES "${EXPECT_OUT}")
  message(FATAL_ERROR "stdout does not match '${EXPECT_OUT}':\n${out}")
endif()
message(STATUS "exit ${rc} as expected; stderr: ${err}")
