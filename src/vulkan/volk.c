/*
 * volk.c — compiles Debian's volk (libvulkan-volk-dev ships it as source) into the library,
 * with hidden visibility like the rest, so its global entry points stay private to moe.
 */
#define VK_NO_PROTOTYPES
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#endif
#include <volk.c>
