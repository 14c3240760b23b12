# The Vulkan backend, included from the top-level CMakeLists.txt when MOE_VULKAN is ON.
# Shaders: each shaders/<name>.comp is compiled by glslang to SPIR-V (rebuilt when it or a
# shared include changes), validated by spirv-val, and turned into a C array header that
# src/vulkan/vk_shaders.c embeds. volk (Debian's libvulkan-volk-dev ships its source) is
# compiled into the library, so Vulkan is loaded at run time and never linked.

find_program(GLSLANG_VALIDATOR glslangValidator REQUIRED)
find_program(SPIRV_VAL spirv-val REQUIRED)
find_path(VOLK_SOURCE_DIR volk.c PATHS /usr/include /usr/local/include REQUIRED)

set(MOE_SHADER_DIR ${CMAKE_CURRENT_SOURCE_DIR}/shaders)
set(MOE_SHADER_OUT ${CMAKE_CURRENT_BINARY_DIR}/shaders)
file(MAKE_DIRECTORY ${MOE_SHADER_OUT})
file(GLOB MOE_SHADER_INCLUDES CONFIGURE_DEPENDS ${MOE_SHADER_DIR}/*.glsl)
set(MOE_SHADER_NAMES gemm select plan_count plan_scan plan_scatter combine stats)
set(MOE_SHADER_HEADERS)
foreach(name ${MOE_SHADER_NAMES})
  set(src ${MOE_SHADER_DIR}/${name}.comp)
  set(spv ${MOE_SHADER_OUT}/${name}.spv)
  set(hdr ${MOE_SHADER_OUT}/${name}.spv.h)
  add_custom_command(OUTPUT ${hdr} ${spv}
    COMMAND ${GLSLANG_VALIDATOR} -V --target-env vulkan1.0 --quiet -I${MOE_SHADER_DIR} -o ${spv} ${src}
    COMMAND ${SPIRV_VAL} --target-env vulkan1.0 ${spv}
    COMMAND ${GLSLANG_VALIDATOR} -V --target-env vulkan1.0 --quiet -I${MOE_SHADER_DIR} --vn moe_spv_${name} -o ${hdr} ${src}
    DEPENDS ${src} ${MOE_SHADER_INCLUDES}
    COMMENT "glslang + spirv-val: ${name}.comp"
    VERBATIM)
  list(APPEND MOE_SHADER_HEADERS ${hdr})
endforeach()
add_custom_target(moe_shaders DEPENDS ${MOE_SHADER_HEADERS})

set(MOE_VULKAN_SOURCES
  src/vulkan/vk_device.c src/vulkan/vk_memory.c src/vulkan/vk_pipeline.c src/vulkan/vk_steps.c
  src/vulkan/vk_shaders.c src/vulkan/volk.c)
