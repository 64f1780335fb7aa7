# The x86 kernel files and the instruction sets each is built for, in one place for every build
# that compiles the core (the library here, the fuzz targets in fuzz/). A file's suffix names its
# ISA; the run-time dispatch (cpu/kernels.cpp) only calls a file's code where the CPU has that ISA.
#
#   ffnskip_x86_kernels(VAR)  sets VAR to every such file and gives each its flags. Source file
#                             properties are per directory: call it in each directory that compiles
#                             the files.
# Normalized (no ".."), so that the paths compare equal to the callers' own globs.
get_filename_component(FFNSKIP_CPU_SOURCE_DIR "${CMAKE_CURRENT_LIST_DIR}/../cpp/src/cpu" ABSOLUTE)

function(ffnskip_x86_kernels out)
  set(avx2 -mavx2 -mfma -mf16c -mbmi2)
  set(avx512 -mavx512f -mavx512bw -mavx512vl -mavx512dq ${avx2})
  file(GLOB avx2_files CONFIGURE_DEPENDS ${FFNSKIP_CPU_SOURCE_DIR}/*_avx2.cpp)
  file(GLOB avx512_files CONFIGURE_DEPENDS ${FFNSKIP_CPU_SOURCE_DIR}/*_avx512.cpp)
  file(GLOB vnni_files CONFIGURE_DEPENDS ${FFNSKIP_CPU_SOURCE_DIR}/*_avx512vnni.cpp)
  file(GLOB amx_files CONFIGURE_DEPENDS ${FFNSKIP_CPU_SOURCE_DIR}/*_amx.cpp)
  set_source_files_properties(${avx2_files} PROPERTIES COMPILE_OPTIONS "${avx2}")
  set_source_files_properties(${avx512_files} PROPERTIES COMPILE_OPTIONS "${avx512}")
  set_source_files_properties(${vnni_files} PROPERTIES COMPILE_OPTIONS "-mavx512vnni;${avx512}")
  set_source_files_properties(${amx_files} PROPERTIES
                              COMPILE_OPTIONS "-mamx-tile;-mamx-bf16;-mavx512bf16;${avx512}")
  set(${out} ${avx2_files} ${avx512_files} ${vnni_files} ${amx_files} PARENT_SCOPE)
endfunction()
