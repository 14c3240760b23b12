/*
 * volk.c — compiles Debian's volk (libvulkan-volk-dev ships it as source) into the library,
 * with hidden visibility like the rest, so its global entry points stay private to moe; and
 * loads a borrowed device's table through the application's vkGetDeviceProcAddr with volk's
 * own (file-static) table loader.
 */
#define VK_NO_PROTOTYPES
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#endif
#include <volk.c>

#include "vk_internal.h"

typedef struct device_loader {
    VkDevice device;
    PFN_vkGetDeviceProcAddr gdpa;
} device_loader;

static PFN_vkVoidFunction load_with(void *context, const char *name)
{
    const device_loader *l = context;
    return l->gdpa(l->device, name);
}

void moe_vk_load_device_table(struct VolkDeviceTable *table, VkDevice device, PFN_vkGetDeviceProcAddr gdpa)
{
    device_loader l = {device, gdpa};
    volkGenLoadDeviceTable(table, &l, load_with);
}
