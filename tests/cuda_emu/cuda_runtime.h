/* Stands in for CUDA's cuda_runtime.h in the CPU emulator build (tests/cuda_emu). */
#include "cuda_emu.h"
