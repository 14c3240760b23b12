# The Vulkan backend, included from the top-level CMakeLists.txt when MOE_VULKAN is ON.
# Shaders: each shaders/<name>.comp is compiled by glslang to SPIR-V (rebuilt when it or a
# shared include changes: shaders/*.glsl, the interface descriptions kernels/*.h), validated
# by spirv-val, and turned into a C array header that src/vulkan/vk_shaders.c embeds. volk
# (Debian's libvulkan-volk-dev ships its source) is compiled into the library, so Vulkan is
# loaded at run time and never linked.

find_program(GLSLANG_VALIDATOR glslangValidator REQUIRED)
find_program(SPIRV_VAL spirv-val REQUIRED)
find_path(VOLK_SOURCE_DIR volk.c PATHS /usr/include /usr/local/include REQUIRED)

set(MOE_SHADER_DIR ${CMAKE_CURRENT_SOURCE_DIR}/shaders)
set(MOE_SHADER_OUT ${CMAKE_CURRENT_BINARY_DIR}/shaders)
file(MAKE_DIRECTORY ${MOE_SHADER_OUT})
set(MOE_KERNEL_DIR ${CMAKE_CURRENT_SOURCE_DIR}/kernels)
file(GLOB MOE_SHADER_INCLUDES CONFIGURE_DEPENDS ${MOE_SHADER_DIR}/*.glsl ${MOE_KERNEL_DIR}/*.h)
# The variant table: name:source:target environment:defines. A variant that needs a device
# feature (subgroup arithmetic needs Vulkan 1.1) is picked at run time only where the device
# reports it.
set(MOE_SHADER_VARIANTS
  gemm:gemm:vulkan1.0: matvec:matvec:vulkan1.0:-DUSE_SUBGROUP=0 matvec_subgroup:matvec:vulkan1.1:-DUSE_SUBGROUP=1
  select:select:vulkan1.0: plan_count:plan_count:vulkan1.0:
  plan_scan:plan_scan:vulkan1.0: plan_scatter:plan_scatter:vulkan1.0:
  combine:combine:vulkan1.0:-DUSE_SUBGROUP=0 combine_subgroup:combine:vulkan1.1:-DUSE_SUBGROUP=1
  stats:stats:vulkan1.0:)
set(MOE_SHADER_HEADERS)
foreach(variant ${MOE_SHADER_VARIANTS})
  string(REPLACE ":" ";" parts "${variant}")
  list(GET parts 0 name)
  list(GET parts 1 source)
  list(GET parts 2 env)
  list(LENGTH parts n)
  set(defines)
  if(n GREATER 3)
    list(GET parts 3 defines)
  endif()
  set(src ${MOE_SHADER_DIR}/${source}.comp)
  set(spv ${MOE_SHADER_OUT}/${name}.spv)
  set(hdr ${MOE_SHADER_OUT}/${name}.spv.h)
  add_custom_command(OUTPUT ${hdr} ${spv}
    COMMAND ${GLSLANG_VALIDATOR} -V --target-env ${env} --quiet -I${MOE_SHADER_DIR} -I${MOE_KERNEL_DIR} ${defines} -o ${spv} ${src}
    COMMAND ${SPIRV_VAL} --target-env ${env} ${spv}
    COMMAND ${GLSLANG_VALIDATOR} -V --target-env ${env} --quiet -I${MOE_SHADER_DIR} -I${MOE_KERNEL_DIR} ${defines} --vn moe_spv_${name} -o ${hdr} ${src}
    DEPENDS ${src} ${MOE_SHADER_INCLUDES}
    COMMENT "glslang + spirv-val: ${name} (${source}.comp ${defines})"
    VERBATIM)
  list(APPEND MOE_SHADER_HEADERS ${hdr})
endforeach()
add_custom_target(moe_shaders DEPENDS ${MOE_SHADER_HEADERS})

set(MOE_VULKAN_SOURCES
  src/vulkan/vk_device.c src/vulkan/vk_memory.c src/vulkan/vk_pipeline.c src/vulkan/vk_steps.c src/vulkan/vk_submit.c src/vulkan/vk_embed.c
  src/vulkan/vk_shaders.c src/vulkan/volk.c)
