# ctest: the layering probes of CMakeLists.txt. `kvb_probe_ok` (methods including common) must
# build; `kvb_probe_upward` (methods including a suites header) must fail, and fail because the
# header is not found, not for some other reason. Run as: cmake -DBUILD_DIR=<build> -P <this>.
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target kvb_probe_ok
                RESULT_VARIABLE ok_rc OUTPUT_VARIABLE ok_out ERROR_VARIABLE ok_out)
if(NOT ok_rc EQUAL 0)
  message(FATAL_ERROR "control probe (methods includes common/hash.h) failed to build:\n${ok_out}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target kvb_probe_upward
                RESULT_VARIABLE up_rc OUTPUT_VARIABLE up_out ERROR_VARIABLE up_out)
if(up_rc EQUAL 0)
  message(FATAL_ERROR "methods/ could include suites/runner.h: the layering is not enforced")
endif()
if(NOT up_out MATCHES "suites/runner\\.h: No such file or directory")
  message(FATAL_ERROR "upward probe failed for another reason than the missing header:\n${up_out}")
endif()
message(STATUS "layering: methods -> common builds; methods -> suites fails: header not found")
