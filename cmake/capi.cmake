# C API (issue 19): libffnskip.so over the same static core as the Python module, its C tests and
# the C example. Only the ffnskip_* functions of cpp/include/ffnskip/ffnskip_c.h are exported:
# everything is compiled with hidden visibility and a linker version script makes the rest local.
# The library and its header are installed inside the Python package (and mirrored in the build
# tree), where ffnskip_native.capi finds them:
#     ffnskip_native/lib/libffnskip.so   ffnskip_native/include/ffnskip/ffnskip_c.h
enable_language(C)

# The core's objects end up in libffnskip.so too; hidden, they cannot clash with (or be
# interposed by) other copies of the engine in the same process, such as the Python module.
set_target_properties(ffnskip_core PROPERTIES CXX_VISIBILITY_PRESET hidden
                                              VISIBILITY_INLINES_HIDDEN ON)

file(GLOB FFNSKIP_CAPI_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/cpp/capi/*.cpp)
set(FFNSKIP_CAPI_HEADER ${PROJECT_SOURCE_DIR}/cpp/include/ffnskip/ffnskip_c.h)
set(FFNSKIP_CAPI_MAP ${PROJECT_SOURCE_DIR}/cpp/capi/libffnskip.map)

add_library(ffnskip SHARED ${FFNSKIP_CAPI_SOURCES})
target_link_libraries(ffnskip PRIVATE ffnskip_core)
target_compile_options(ffnskip PRIVATE -Wall -Wextra)
target_link_options(ffnskip PRIVATE "LINKER:--version-script=${FFNSKIP_CAPI_MAP}"
                    "LINKER:--no-undefined")
set_target_properties(ffnskip PROPERTIES
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LINK_DEPENDS ${FFNSKIP_CAPI_MAP}
    LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/lib)
configure_file(${FFNSKIP_CAPI_HEADER} ${CMAKE_BINARY_DIR}/include/ffnskip/ffnskip_c.h COPYONLY)

install(TARGETS ffnskip LIBRARY DESTINATION ffnskip_native/lib)
install(FILES ${FFNSKIP_CAPI_HEADER} DESTINATION ffnskip_native/include/ffnskip)

# Not built by default (nor by pip): CI builds them, with sanitizers in a separate build dir.
# tests/test_capi.py compiles the same sources against an installed library when no build of
# them is given.
add_executable(ffnskip_capi_test EXCLUDE_FROM_ALL ${PROJECT_SOURCE_DIR}/tests/capi/test_capi.c)
add_executable(ffnskip_generate EXCLUDE_FROM_ALL ${PROJECT_SOURCE_DIR}/examples/c/generate.c)
foreach(exe ffnskip_capi_test ffnskip_generate)
  target_include_directories(${exe} PRIVATE ${PROJECT_SOURCE_DIR}/cpp/include)
  target_link_libraries(${exe} PRIVATE ffnskip Threads::Threads)
  target_compile_options(${exe} PRIVATE -Wall -Wextra)
  set_target_properties(${exe} PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON)
  if(FFNSKIP_SANITIZE)
    # The sanitizer runtime must be linked into the executable that loads the library.
    target_compile_options(${exe} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer)
    target_link_options(${exe} PRIVATE -fsanitize=address,undefined)
  endif()
endforeach()
