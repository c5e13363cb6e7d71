# The pinned stable-diffusion.cpp source (with our patches) and how wanpy compiles it, shared by
# the product build (../CMakeLists.txt) and the bench build (../bench/CMakeLists.txt), so that
# sd-cli and the test hooks run exactly the engine wanpy._core links.
#
# Sets SDCPP_DIR, WANPY_SDCPP_SOURCE (a one-line description) and WANPY_BACKEND (cpu, vulkan,
# cuda, hip or metal: from upstream's own SD_VULKAN/SD_CUDA/SD_HIPBLAS/SD_METAL options). The
# includer then adds "${SDCPP_DIR}" as a subdirectory.
include_guard(GLOBAL)
get_filename_component(WANPY_ROOT "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)

set(WANPY_SDCPP_DIR "$ENV{WANPY_SDCPP_DIR}" CACHE PATH
    "Build against this stable-diffusion.cpp checkout instead of the pinned PyPI sdist")

if(WANPY_SDCPP_DIR)
  get_filename_component(SDCPP_DIR "${WANPY_SDCPP_DIR}" ABSOLUTE)
  set(WANPY_SDCPP_SOURCE "custom checkout ${SDCPP_DIR}")
else()
  set(SDCPP_DIR "${WANPY_ROOT}/extern/stable-diffusion.cpp")
  execute_process(
    COMMAND "${Python_EXECUTABLE}" "${WANPY_ROOT}/scripts/fetch_sdcpp.py"
    RESULT_VARIABLE _fetch_rc)
  if(NOT _fetch_rc EQUAL 0)
    message(FATAL_ERROR "scripts/fetch_sdcpp.py failed (exit ${_fetch_rc}): see its message above")
  endif()
  file(GLOB _patches CONFIGURE_DEPENDS "${WANPY_ROOT}/extern/patches/*.patch")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
               "${WANPY_ROOT}/extern/sdcpp.lock" ${_patches})
  file(READ "${SDCPP_DIR}/WANPY_SOURCE.json" _record)
  string(JSON _pkg GET "${_record}" package)
  string(JSON _ver GET "${_record}" version)
  string(JSON _sha GET "${_record}" sha256)
  string(JSON _npatches LENGTH "${_record}" patches)
  set(WANPY_SDCPP_SOURCE "${_pkg}==${_ver} sdist + ${_npatches} wanpy patches")
  set(SDCPP_BUILD_VERSION "${_pkg}-${_ver}")
  string(SUBSTRING "${_sha}" 0 12 _sha12)
  set(SDCPP_BUILD_COMMIT "sdist-sha256-${_sha12}")
endif()
if(NOT EXISTS "${SDCPP_DIR}/include/stable-diffusion.h")
  message(FATAL_ERROR "${SDCPP_DIR} is not a stable-diffusion.cpp source tree")
endif()
message(STATUS "wanpy: stable-diffusion.cpp from ${WANPY_SDCPP_SOURCE}")

# sd.cpp stamps its version from `git describe` in its folder; ours is not its repo,
# so hide git from it and give it the version we recorded.
set(GIT_EXE "" CACHE FILEPATH "git for sd.cpp's version stamp (disabled by wanpy)" FORCE)
if(NOT SDCPP_BUILD_VERSION)
  set(SDCPP_BUILD_VERSION "custom")
endif()

# ccache (ggml only turns it on for its own targets)
find_program(WANPY_CCACHE ccache)
if(WANPY_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_C_COMPILER_LAUNCHER "${WANPY_CCACHE}")
  set(CMAKE_CXX_COMPILER_LAUNCHER "${WANPY_CCACHE}")
  # ggml's own ccache rule covers every language but stands back once a launcher is set: the
  # CUDA and HIP kernels (most of a GPU build's time) need theirs named too
  set(CMAKE_CUDA_COMPILER_LAUNCHER "${WANPY_CCACHE}")
  set(CMAKE_HIP_COMPILER_LAUNCHER "${WANPY_CCACHE}")
endif()

# Static libraries linked into a shared module must be position independent.
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
set(CMAKE_POLICY_DEFAULT_CMP0077 NEW)
set(BUILD_SHARED_LIBS OFF)
set(SD_BUILD_SHARED_LIBS OFF)

if(SD_VULKAN)
  set(WANPY_BACKEND vulkan)
elseif(SD_CUDA)
  set(WANPY_BACKEND cuda)
elseif(SD_HIPBLAS)
  set(WANPY_BACKEND hip)
elseif(SD_METAL)
  set(WANPY_BACKEND metal)
else()
  set(WANPY_BACKEND cpu)
endif()
message(STATUS "wanpy: backend ${WANPY_BACKEND}")
