# How the installed modules (_core and libffnskip) find their runtime libraries (issue 19).
#
# FFNSKIP_STATIC_CXX_RUNTIME (tools/build_wheel.sh turns it on): link libstdc++ and libgcc
# statically, so a wheel needs only glibc: it runs where the system's libstdc++ is older than the
# build machine's, and inside apps that bring their own. --exclude-libs keeps the runtime's
# symbols local: the module would otherwise export ~4400 std:: symbols (measured) and could bind
# to another libstdc++ already loaded in the process.
#
# CUDA from pip: the toolkit wheels (nvidia-cublas, ...) put libcublas.so.13 under
# site-packages/nvidia/<...>/lib, where the loader does not look. The modules get an RPATH to that
# folder, relative to where they are installed in site-packages ($ORIGIN), plus its absolute path
# in the build tree, so that neither an install nor a build needs LD_LIBRARY_PATH.
option(FFNSKIP_STATIC_CXX_RUNTIME "Link libstdc++/libgcc statically (portable wheels)" OFF)

foreach(_target _core ffnskip)
  if(FFNSKIP_STATIC_CXX_RUNTIME)
    target_link_options(${_target} PRIVATE -static-libstdc++ -static-libgcc
                        "LINKER:--exclude-libs,ALL")
  endif()
endforeach()

if(FFNSKIP_HAVE_CUDA)
  get_target_property(_ffnskip_cublas CUDA::cublas IMPORTED_LOCATION)
  get_filename_component(_ffnskip_cublas_dir "${_ffnskip_cublas}" DIRECTORY)
  get_filename_component(_ffnskip_cublas_dir "${_ffnskip_cublas_dir}" REALPATH)
  # ".../site-packages/nvidia/cu13/lib" -> "nvidia/cu13/lib"; empty for a system toolkit.
  string(REGEX MATCH "/(site|dist)-packages/(.*)$" _ffnskip_match "${_ffnskip_cublas_dir}")
  set(_ffnskip_cublas_rel "${CMAKE_MATCH_2}")
  # installed_dir: the module's folder relative to site-packages once installed.
  function(_ffnskip_rpath_to_cublas target installed_dir)
    set_property(TARGET ${target} APPEND PROPERTY BUILD_RPATH "${_ffnskip_cublas_dir}")
    if(_ffnskip_cublas_rel)
      string(REGEX REPLACE "[^/]+" ".." up "${installed_dir}")
      set_property(TARGET ${target} APPEND PROPERTY INSTALL_RPATH
                   "$ORIGIN/${up}/${_ffnskip_cublas_rel}")
    endif()
  endfunction()
  _ffnskip_rpath_to_cublas(_core ffnskip_native)
  _ffnskip_rpath_to_cublas(ffnskip ffnskip_native/lib)
  message(STATUS "ffnskip: cuBLAS from ${_ffnskip_cublas_dir}; installed modules look in "
                 "site-packages/${_ffnskip_cublas_rel}")
endif()
