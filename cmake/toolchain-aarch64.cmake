# Cross-compiling for 64-bit ARM Linux on a Debian x86-64 host, running the results under qemu.
#
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake -DRWKVL_BUILD_BENCH=OFF
#
# Needs: g++-aarch64-linux-gnu (compiler + arm64 libc/libstdc++ under /usr/aarch64-linux-gnu), qemu-user,
# and the arm64 builds of the libraries we link, installed Debian-multiarch style into
# /usr/lib/aarch64-linux-gnu (dpkg --add-architecture arm64; apt-get install libpcre2-dev:arm64
# libgtest-dev:arm64). scripts/test-aarch64.sh does all of that.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(RWKVL_CROSS_TRIPLET aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${RWKVL_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${RWKVL_CROSS_TRIPLET}-g++)
# Libraries of the multiarch packages live in /usr/lib/aarch64-linux-gnu; CMake normally derives
# this from the compiler, setting it makes find_package/find_library look there from the first probe.
set(CMAKE_LIBRARY_ARCHITECTURE ${RWKVL_CROSS_TRIPLET})

# Search for libraries, headers and CMake package files only among target (arm64) files: the cross
# sysroot and the multiarch directories of the host root. Programs (pkg-config, qemu) are host ones.
set(CMAKE_FIND_ROOT_PATH /usr/${RWKVL_CROSS_TRIPLET} /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config must read the arm64 .pc files, never the host's x86-64 ones.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${RWKVL_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# Test executables (and gtest_discover_tests at build time) run through user-mode qemu. -L makes
# qemu take the dynamic loader from the cross toolchain's sysroot. The loader and libc must be the
# very same glibc build, but once libc6:arm64 is installed (a dependency of the multiarch -dev
# packages) the host's /etc/ld.so.cache points the loader at /lib/aarch64-linux-gnu/libc.so.6, a
# slightly different build: threaded programs then hang in pthread_create. LD_LIBRARY_PATH (searched
# before the cache) pins libc/libstdc++ to the sysroot; other arm64 libraries (pcre2) still come from
# /usr/lib/aarch64-linux-gnu through the cache.
set(CMAKE_CROSSCOMPILING_EMULATOR
    "qemu-aarch64;-L;/usr/${RWKVL_CROSS_TRIPLET};-E;LD_LIBRARY_PATH=/usr/${RWKVL_CROSS_TRIPLET}/lib")
