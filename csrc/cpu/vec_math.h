// Multiversioning of small auto-vectorized CPU leaf functions (csrc/cpu/*.cpp).
#pragma once

// Leaf functions marked FASTVDM_MULTIVERSION are compiled twice (AVX2+FMA and baseline x86-64); the loader
// picks the clone the CPU supports.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTVDM_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FASTVDM_MULTIVERSION
#endif
