# The OpenCL backend, included from the top-level CMakeLists.txt when MOE_OPENCL is ON.
# Kernels: each opencl/<name>.cl (and opencl/common.cl, prepended to each when a program is
# built) becomes a C array header in the build tree (src/opencl/embed_cl.cmake), rebuilt when
# the .cl changes, and src/opencl/cl_program.c embeds them. The programs are compiled by the
# driver at run time with -D specialisation and cached on disk as binaries. The library links
# the OpenCL ICD loader (libOpenCL, ocl-icd on Debian), never a vendor's driver.

set(MOE_CL_DIR ${CMAKE_CURRENT_SOURCE_DIR}/opencl)
set(MOE_CL_OUT ${CMAKE_CURRENT_BINARY_DIR}/opencl)
file(MAKE_DIRECTORY ${MOE_CL_OUT})
set(MOE_CL_NAMES common gemm select plan_count plan_scan plan_scatter combine stats)
set(MOE_CL_HEADERS)
foreach(name ${MOE_CL_NAMES})
  set(src ${MOE_CL_DIR}/${name}.cl)
  set(hdr ${MOE_CL_OUT}/${name}.cl.h)
  add_custom_command(OUTPUT ${hdr}
    COMMAND ${CMAKE_COMMAND} -DIN=${src} -DOUT=${hdr} -DNAME=moe_cl_${name}
      -P ${CMAKE_CURRENT_SOURCE_DIR}/src/opencl/embed_cl.cmake
    DEPENDS ${src} ${CMAKE_CURRENT_SOURCE_DIR}/src/opencl/embed_cl.cmake
    COMMENT "embed ${name}.cl"
    VERBATIM)
  list(APPEND MOE_CL_HEADERS ${hdr})
endforeach()
add_custom_target(moe_cl_kernels DEPENDS ${MOE_CL_HEADERS})

set(MOE_OPENCL_SOURCES
  src/opencl/cl_device.c src/opencl/cl_memory.c src/opencl/cl_program.c src/opencl/cl_steps.c)
