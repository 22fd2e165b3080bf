# Test registration, included from the top-level CMakeLists.txt.
#   tests/unit/test_*.c    C unit tests (one executable each, linked to usersync_core)
#   tests/lua/test_*.lua   Lua tests run by the usersync binary (`usersync run`)
#   tests/fakes/test_*.py  simulator contract and behaviour tests
#   tests/e2e/test_*.sh    black-box scenarios against the simulators
# Tests that need a local server start it themselves (see tests/lua/support).
find_program(PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT PYTHON3)
  find_program(PYTHON3 NAMES python3 REQUIRED)
endif()

# USERSYNC_VALGRIND=ON runs the C unit tests and the Lua tests under valgrind:
# any error or definitely-lost block fails the test.
option(USERSYNC_VALGRIND "Run unit and Lua tests under valgrind" OFF)
set(US_WRAP "")
if(USERSYNC_VALGRIND)
  find_program(VALGRIND valgrind REQUIRED)
  set(US_WRAP ${VALGRIND} --quiet --error-exitcode=99 --leak-check=full
      --errors-for-leak-kinds=definite --show-leak-kinds=definite --track-fds=no)
endif()

set(US_TEST_ENV "USERSYNC=$<TARGET_FILE:usersync>;PYTHON3=${PYTHON3};SOURCE_DIR=${CMAKE_SOURCE_DIR};DATA_DIR=${CMAKE_SOURCE_DIR}/tests/data")

file(GLOB US_UNIT_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/unit/test_*.c)
foreach(src IN LISTS US_UNIT_TESTS)
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE usersync_core)
  add_test(NAME unit/${name} COMMAND ${US_WRAP} $<TARGET_FILE:${name}>)
  set_tests_properties(unit/${name} PROPERTIES LABELS unit ENVIRONMENT "${US_TEST_ENV}" TIMEOUT 120)
endforeach()

file(GLOB US_LUA_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/lua/test_*.lua)
foreach(src IN LISTS US_LUA_TESTS)
  get_filename_component(name ${src} NAME_WE)
  add_test(NAME lua/${name} COMMAND ${US_WRAP} $<TARGET_FILE:usersync> run ${src})
  set_tests_properties(lua/${name} PROPERTIES LABELS lua ENVIRONMENT "${US_TEST_ENV}" TIMEOUT 900)
endforeach()

if(USERSYNC_VALGRIND)
  return()  # simulator and end-to-end tests gain nothing under valgrind
endif()

file(GLOB US_PY_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/fakes/test_*.py)
foreach(src IN LISTS US_PY_TESTS)
  get_filename_component(name ${src} NAME_WE)
  add_test(NAME fakes/${name} COMMAND ${PYTHON3} ${src})
  set_tests_properties(fakes/${name} PROPERTIES LABELS fakes ENVIRONMENT "${US_TEST_ENV}" TIMEOUT 300)
endforeach()

file(GLOB US_E2E_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/e2e/test_*.sh)
foreach(src IN LISTS US_E2E_TESTS)
  get_filename_component(name ${src} NAME_WE)
  add_test(NAME e2e/${name} COMMAND bash ${src})
  set_tests_properties(e2e/${name} PROPERTIES LABELS e2e ENVIRONMENT "${US_TEST_ENV}" TIMEOUT 600)
endforeach()

# Contract test (tests/contract): every request usersync makes and every answer the simulators
# give, validated against the vendor OpenAPI documents by Prism (npm, pinned by
# tests/contract/package-lock.json, installed on first run into build/contract).
add_test(NAME contract/test_contract COMMAND ${PYTHON3} ${CMAKE_SOURCE_DIR}/tests/contract/test_contract.py)
set_tests_properties(contract/test_contract PROPERTIES LABELS contract TIMEOUT 900
  ENVIRONMENT "${US_TEST_ENV};CONTRACT_CACHE=${CMAKE_BINARY_DIR}/contract")
