# Turns one OpenCL C source into a C header holding it as a NUL-terminated char array
# (unsigned bytes, not a string literal, so no compiler's string-length limit applies).
# A program is built at run time by the driver, which has no include path, so every
# `#include "name"` line is replaced here by the file it names (looked up in CL_DIR, opencl/,
# then KERNEL_DIR, kernels/), recursively: the embedded text is the whole program, and the
# binary cache's key (a hash of it) changes with any file it includes.
# Usage: cmake -DIN=<file.cl> -DOUT=<file.cl.h> -DNAME=<symbol> -DCL_DIR=<dir> -DKERNEL_DIR=<dir>
#        -P embed_cl.cmake

function(moe_cl_inline path depth out_var)
  if(depth GREATER 8)
    message(FATAL_ERROR "embed_cl: includes nested too deep at ${path}")
  endif()
  file(READ ${path} text)
  string(REGEX MATCHALL "#include \"[^\"]+\"" includes "${text}")
  list(REMOVE_DUPLICATES includes)
  foreach(line ${includes})
    string(REGEX REPLACE "#include \"([^\"]+)\"" "\\1" name "${line}")
    set(found)
    foreach(dir ${CL_DIR} ${KERNEL_DIR})
      if(NOT found AND EXISTS ${dir}/${name})
        set(found ${dir}/${name})
      endif()
    endforeach()
    if(NOT found)
      message(FATAL_ERROR "embed_cl: ${path}: ${name} not found in ${CL_DIR} or ${KERNEL_DIR}")
    endif()
    math(EXPR next "${depth} + 1")
    moe_cl_inline(${found} ${next} body)
    string(REPLACE "${line}" "${body}" text "${text}")
  endforeach()
  set(${out_var} "${text}" PARENT_SCOPE)
endfunction()

moe_cl_inline(${IN} 0 source)
file(WRITE ${OUT}.cl.tmp "${source}")
file(READ ${OUT}.cl.tmp hex HEX)
file(REMOVE ${OUT}.cl.tmp)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
get_filename_component(base ${IN} NAME)
file(WRITE ${OUT}.tmp "/* Generated from opencl/${base} (its #include lines inlined) by src/opencl/embed_cl.cmake; do not edit. */\nstatic const unsigned char ${NAME}[] = {\n${bytes}0x00};\n")
file(RENAME ${OUT}.tmp ${OUT})
