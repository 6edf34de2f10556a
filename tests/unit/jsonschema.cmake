# Unit test for common/jsonschema: the official JSON-Schema-Test-Suite (draft 7) plus
# our own cases. Included from tests/unit/CMakeLists.txt.
#
# Arguments: the draft7 directory of the suite (Debian package json-schema-test-suite)
# and the repository's schemas/ directory, every file of which must compile.

if(NOT TARGET PkgConfig::CMOCKA)
    pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)
endif()

set(XM_JSONSCHEMA_SUITE_DIR "/usr/share/json-schema-test-suite/tests/draft7"
    CACHE PATH "draft7 directory of the official JSON-Schema-Test-Suite")

add_executable(test_jsonschema ${CMAKE_CURRENT_LIST_DIR}/test_jsonschema.c)
target_link_libraries(test_jsonschema PRIVATE xmcommon PkgConfig::CMOCKA)
add_test(NAME unit.jsonschema
         COMMAND test_jsonschema ${XM_JSONSCHEMA_SUITE_DIR}
                 ${CMAKE_CURRENT_LIST_DIR}/../../schemas)
