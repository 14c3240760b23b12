# The OpenCL backend, included from the top-level CMakeLists.txt when MOE_OPENCL is ON.
# Kernels: each opencl/<name>.cl becomes a C array header in the build tree
# (src/opencl/embed_cl.cmake), its #include lines (opencl/common.cl, the kernel's interface
# description kernels/<name>.h) inlined, rebuilt when any of them changes, and
# src/opencl/cl_program.c embeds them. The programs are compiled by the driver at run time
# with -D specialisation and cached on disk as binaries. The library links the OpenCL ICD
# loader (libOpenCL, ocl-icd on Debian), never a vendor's driver.

set(MOE_CL_DIR ${CMAKE_CURRENT_SOURCE_DIR}/opencl)
set(MOE_CL_OUT ${CMAKE_CURRENT_BINARY_DIR}/opencl)
set(MOE_CL_KERNEL_DIR ${CMAKE_CURRENT_SOURCE_DIR}/kernels)
file(MAKE_DIRECTORY ${MOE_CL_OUT})
file(GLOB MOE_CL_INCLUDES CONFIGURE_DEPENDS ${MOE_CL_DIR}/common.cl ${MOE_CL_DIR}/weights.cl ${MOE_CL_KERNEL_DIR}/*.h)
set(MOE_CL_NAMES gemm matvec select plan_count plan_scan plan_scatter combine stats)
set(MOE_CL_HEADERS)
foreach(name ${MOE_CL_NAMES})
  set(src ${MOE_CL_DIR}/${name}.cl)
  set(hdr ${MOE_CL_OUT}/${name}.cl.h)
  add_custom_command(OUTPUT ${hdr}
    COMMAND ${CMAKE_COMMAND} -DIN=${src} -DOUT=${hdr} -DNAME=moe_cl_text_${name}
      -DCL_DIR=${MOE_CL_DIR} -DKERNEL_DIR=${MOE_CL_KERNEL_DIR}
      -P ${CMAKE_CURRENT_SOURCE_DIR}/src/opencl/embed_cl.cmake
    DEPENDS ${src} ${MOE_CL_INCLUDES} ${CMAKE_CURRENT_SOURCE_DIR}/src/opencl/embed_cl.cmake
    COMMENT "embed ${name}.cl"
    VERBATIM)
  list(APPEND MOE_CL_HEADERS ${hdr})
endforeach()
add_custom_target(moe_cl_kernels DEPENDS ${MOE_CL_HEADERS})

# What the library links for OpenCL. Linux and the like: the ICD loader (libOpenCL). Windows: a
# delay-load import library of OpenCL.dll made from OpenCL.def by the toolchain's dlltool, so
# that libmoe.dll loads on a machine without OpenCL (cl_device.c loads OpenCL.dll before its
# first call; none is zero devices) and the Windows ICD loader, which no Debian package builds,
# is not needed to build. The import library is installed beside the static library, whose
# users link it (moeConfig.cmake's moe::opencl_delayload).
if(WIN32)
  if(NOT CMAKE_DLLTOOL)
    message(FATAL_ERROR "the OpenCL backend on Windows needs the toolchain's dlltool (CMAKE_DLLTOOL)")
  endif()
  set(MOE_CL_DELAYLIB ${MOE_CL_OUT}/libmoe_opencl_delayload.a)
  add_custom_command(OUTPUT ${MOE_CL_DELAYLIB}
    COMMAND ${CMAKE_DLLTOOL} --input-def ${CMAKE_CURRENT_SOURCE_DIR}/src/opencl/OpenCL.def
      --dllname OpenCL.dll --output-delaylib ${MOE_CL_DELAYLIB}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/opencl/OpenCL.def
    COMMENT "dlltool: OpenCL.dll delay-load import library"
    VERBATIM)
  add_custom_target(moe_cl_delayload DEPENDS ${MOE_CL_DELAYLIB})
  set(MOE_OPENCL_LINK ${MOE_CL_DELAYLIB})
else()
  set(MOE_OPENCL_LINK OpenCL::OpenCL)
endif()

set(MOE_OPENCL_SOURCES
  src/opencl/cl_device.c src/opencl/cl_memory.c src/opencl/cl_program.c src/opencl/cl_steps.c src/opencl/cl_embed.c)
