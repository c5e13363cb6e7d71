// Vulkan limits read from the driver itself: ggml's get_max_size reports its 1 GiB
// sub-allocation block, not the ceiling a single buffer really has. Read without the GIL
// (the first call initialises ggml's Vulkan instance), returned as records after.
#include "wanpy_core.h"

#include <vulkan/vulkan.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "ggml-vulkan.h"

namespace {

struct Instance {
    VkInstance handle = VK_NULL_HANDLE;
    ~Instance() {
        if (handle != VK_NULL_HANDLE) vkDestroyInstance(handle, nullptr);
    }
};

bool has_extension(VkPhysicalDevice dev, const char* name) {
    uint32_t n = 0;
    vkEnumerateDeviceExtensionProperties(dev, nullptr, &n, nullptr);
    std::vector<VkExtensionProperties> exts(n);
    vkEnumerateDeviceExtensionProperties(dev, nullptr, &n, exts.data());
    for (const auto& e : exts) {
        if (std::strcmp(e.extensionName, name) == 0) return true;
    }
    return false;
}

const char* device_type(VkPhysicalDeviceType t) {
    switch (t) {
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "gpu";
        case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "igpu";
        case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
        case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
        default: return "other";
    }
}

struct Limits {
    uint32_t physical_index = 0;
    std::string ggml_name, name, type, driver_name, driver_info;
    uint32_t api_version                         = 0;
    uint64_t max_memory_allocation_size          = 0;
    std::optional<uint64_t> max_buffer_size;     // maintenance4 only
    uint64_t max_storage_buffer_range            = 0;
    uint64_t min_storage_buffer_offset_alignment = 0;
    uint64_t device_local_heap_size              = 0;
};

Limits describe(VkPhysicalDevice dev, uint32_t physical_index) {
    const bool m4 = has_extension(dev, "VK_KHR_maintenance4");
    VkPhysicalDeviceMaintenance4Properties props4{};
    props4.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_PROPERTIES;
    VkPhysicalDeviceMaintenance3Properties props3{};
    props3.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES;
    props3.pNext = m4 ? &props4 : nullptr;
    VkPhysicalDeviceDriverProperties driver{};
    driver.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES;
    driver.pNext = &props3;
    VkPhysicalDeviceProperties2 props{};
    props.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
    props.pNext = &driver;
    vkGetPhysicalDeviceProperties2(dev, &props);

    VkPhysicalDeviceMemoryProperties mem{};
    vkGetPhysicalDeviceMemoryProperties(dev, &mem);
    uint64_t device_local = 0;
    for (uint32_t h = 0; h < mem.memoryHeapCount; ++h) {
        if (mem.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) device_local += mem.memoryHeaps[h].size;
    }

    Limits l;
    l.physical_index             = physical_index;
    l.name                       = props.properties.deviceName;
    l.type                       = device_type(props.properties.deviceType);
    l.driver_name                = driver.driverName;
    l.driver_info                = driver.driverInfo;
    l.api_version                = props.properties.apiVersion;
    l.max_memory_allocation_size = props3.maxMemoryAllocationSize;
    if (m4) l.max_buffer_size = props4.maxBufferSize;
    l.max_storage_buffer_range            = props.properties.limits.maxStorageBufferRange;
    l.min_storage_buffer_offset_alignment = props.properties.limits.minStorageBufferOffsetAlignment;
    l.device_local_heap_size              = device_local;
    return l;
}

wanpy::Record as_record(const Limits& l) {
    wanpy::Record d;
    d["physical_index"]                      = l.physical_index;
    d["name"]                                = l.name;
    d["type"]                                = l.type;
    d["driver_name"]                         = l.driver_name;
    d["driver_info"]                         = l.driver_info;
    d["api_version"]                         = l.api_version;
    d["max_memory_allocation_size"]          = l.max_memory_allocation_size;
    d["max_buffer_size"]                     = l.max_buffer_size ? py::object(py::int_(*l.max_buffer_size))
                                                                 : py::object(py::none());
    d["max_storage_buffer_range"]            = l.max_storage_buffer_range;
    d["min_storage_buffer_offset_alignment"] = l.min_storage_buffer_offset_alignment;
    d["device_local_heap_size"]              = l.device_local_heap_size;
    d["ggml_name"]                           = l.ggml_name;
    return d;
}

std::vector<Limits> read_limits() {
    std::vector<Limits> out;
    // Initialises ggml's own Vulkan instance first, so its device list is the reference.
    const int ggml_count = ggml_backend_vk_get_device_count();
    if (ggml_count <= 0) return out;

    Instance inst;
    VkApplicationInfo app{};
    app.sType      = VK_STRUCTURE_TYPE_APPLICATION_INFO;
    app.pApplicationName = "wanpy-device-query";
    app.apiVersion = VK_API_VERSION_1_2;
    VkInstanceCreateInfo ci{};
    ci.sType            = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
    ci.pApplicationInfo = &app;
    if (vkCreateInstance(&ci, nullptr, &inst.handle) != VK_SUCCESS) {
        throw wanpy::NativeError("vkCreateInstance failed while reading device limits");
    }
    uint32_t n = 0;
    vkEnumeratePhysicalDevices(inst.handle, &n, nullptr);
    std::vector<VkPhysicalDevice> phys(n);
    vkEnumeratePhysicalDevices(inst.handle, &n, phys.data());

    // Map ggml's device i to a physical device: through GGML_VK_VISIBLE_DEVICES exactly
    // as ggml parses it, otherwise by name in enumeration order (ggml keeps that order).
    std::vector<uint32_t> mapping;
    if (const char* visible = std::getenv("GGML_VK_VISIBLE_DEVICES")) {
        std::string s(visible);
        for (char& c : s) if (c == ',') c = ' ';
        std::stringstream ss(s);
        size_t idx;
        while (ss >> idx) mapping.push_back(static_cast<uint32_t>(idx));
    } else {
        std::vector<bool> used(n, false);
        for (int i = 0; i < ggml_count; ++i) {
            char desc[256] = {0};
            ggml_backend_vk_get_device_description(i, desc, sizeof(desc));
            for (uint32_t p = 0; p < n; ++p) {
                VkPhysicalDeviceProperties pp;
                vkGetPhysicalDeviceProperties(phys[p], &pp);
                if (!used[p] && std::strcmp(pp.deviceName, desc) == 0) {
                    used[p] = true;
                    mapping.push_back(p);
                    break;
                }
            }
        }
    }
    for (int i = 0; i < ggml_count && i < static_cast<int>(mapping.size()); ++i) {
        if (mapping[i] >= n) continue;
        Limits l    = describe(phys[mapping[i]], mapping[i]);
        l.ggml_name = "Vulkan" + std::to_string(i);
        out.push_back(std::move(l));
    }
    return out;
}

}  // namespace

wanpy::RecordList wanpy::vulkan_device_limits() {
    std::vector<Limits> limits;
    {
        py::gil_scoped_release release;
        limits = read_limits();
    }
    RecordList out;
    for (const Limits& l : limits) out.append(as_record(l));
    return out;
}
