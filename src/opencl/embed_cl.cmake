# Turns one OpenCL C source into a C header holding it as a NUL-terminated char array
# (unsigned bytes, not a string literal, so no compiler's string-length limit applies).
# Usage: cmake -DIN=<file.cl> -DOUT=<file.cl.h> -DNAME=<symbol> -P embed_cl.cmake
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
get_filename_component(base ${IN} NAME)
file(WRITE ${OUT}.tmp "/* Generated from opencl/${base} by src/opencl/embed_cl.cmake; do not edit. */\nstatic const unsigned char ${NAME}[] = {\n${bytes}0x00};\n")
file(RENAME ${OUT}.tmp ${OUT})
