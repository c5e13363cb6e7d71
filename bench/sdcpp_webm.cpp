// wanpy-sdcpp-webm: stable-diffusion.cpp's own WebM writer, as a command line tool for
// bench/bench_webm.py (bench-only; built by bench/CMakeLists.txt, never installed).
//
// It calls create_webm_from_sd_images() from the pinned sd.cpp examples/common/media_io.cpp
// unchanged: every frame is encoded with libwebp's lossy WebPEncodeRGB(quality) and muxed by
// libwebm as a VP8 key frame.
//
// Usage: wanpy-sdcpp-webm FRAMES.raw OUT.webm FPS QUALITY
// FRAMES.raw: T, H, W as uint32 little endian, then T*H*W*3 bytes of RGB (uint8).
// On success it prints one line to stderr, "wanpy-sdcpp-webm: T frames HxW in S s", where S is
// the time create_webm_from_sd_images() took (encode, mux and file write; no input reading).
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "media_io.h"

#ifndef SD_USE_WEBM
#error "wanpy-sdcpp-webm needs sd.cpp built with SD_WEBM (and SD_WEBP)"
#endif

namespace {

bool parse_int(const char* text, long min, long max, int& out) {
    char* end = nullptr;
    errno     = 0;
    long v    = std::strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max) {
        return false;
    }
    out = static_cast<int>(v);
    return true;
}

uint32_t read_u32le(const unsigned char* p) {
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
           (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: %s FRAMES.raw OUT.webm FPS QUALITY\n"
                             "FRAMES.raw: T H W (uint32 LE), then T*H*W*3 RGB bytes\n",
                     argc > 0 ? argv[0] : "wanpy-sdcpp-webm");
        return 2;
    }
    int fps = 0, quality = 0;
    if (!parse_int(argv[3], 1, 1000, fps)) {
        std::fprintf(stderr, "error: bad FPS '%s'\n", argv[3]);
        return 2;
    }
    if (!parse_int(argv[4], 0, 100, quality)) {
        std::fprintf(stderr, "error: bad QUALITY '%s' (0..100)\n", argv[4]);
        return 2;
    }

    FILE* in = std::fopen(argv[1], "rb");
    if (in == nullptr) {
        std::fprintf(stderr, "error: cannot open %s: %s\n", argv[1], std::strerror(errno));
        return 1;
    }
    unsigned char header[12];
    if (std::fread(header, 1, sizeof header, in) != sizeof header) {
        std::fprintf(stderr, "error: %s: short header\n", argv[1]);
        std::fclose(in);
        return 1;
    }
    const uint32_t t = read_u32le(header), h = read_u32le(header + 4), w = read_u32le(header + 8);
    if (t == 0 || h == 0 || w == 0 || t > 100000 || h > 16384 || w > 16384) {
        std::fprintf(stderr, "error: %s: bad shape T=%u H=%u W=%u\n", argv[1], t, h, w);
        std::fclose(in);
        return 1;
    }
    const size_t frame_bytes = static_cast<size_t>(h) * w * 3;
    std::vector<uint8_t> pixels;
    try {
        pixels.resize(frame_bytes * t);
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "error: out of memory for %u frames of %ux%u\n", t, w, h);
        std::fclose(in);
        return 1;
    }
    const size_t got = std::fread(pixels.data(), 1, pixels.size(), in);
    const bool trailing = std::fgetc(in) != EOF;
    std::fclose(in);
    if (got != pixels.size() || trailing) {
        std::fprintf(stderr, "error: %s: expected %zu pixel bytes after the header, %s\n", argv[1],
                     pixels.size(), trailing ? "found more" : "found fewer");
        return 1;
    }

    std::vector<sd_image_t> images(t);
    for (uint32_t i = 0; i < t; ++i) {
        images[i] = sd_image_t{w, h, 3, pixels.data() + frame_bytes * i};
    }
    const auto start = std::chrono::steady_clock::now();
    if (create_webm_from_sd_images(argv[2], images.data(), static_cast<int>(t), fps, quality) != 0) {
        std::fprintf(stderr, "error: create_webm_from_sd_images failed for %s\n", argv[2]);
        return 1;
    }
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    std::fprintf(stderr, "wanpy-sdcpp-webm: %u frames %ux%u in %.6f s\n", t, h, w, took.count());
    return 0;
}
