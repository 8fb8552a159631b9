/** Errors raised by the GPU runtime. Each names what failed so a user can act on it. */

export class GpuError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GpuError';
  }
}

/** No WebGPU adapter at all: tell the user what to install. */
export class NoAdapterError extends GpuError {
  constructor(detail: string) {
    super(
      `No GPU adapter was found (${detail}). rwkv-lora-gpu runs on Vulkan through Dawn: ` +
        'on a machine with an NVIDIA GPU install the NVIDIA driver (it ships the Vulkan driver) and ' +
        'the Vulkan loader (Debian/Ubuntu: apt-get install libvulkan1); on a machine without a GPU install ' +
        "Mesa's lavapipe CPU driver (Debian 12: mesa-vulkan-drivers from bookworm-backports, Mesa >= 24).",
    );
    this.name = 'NoAdapterError';
  }
}

export class GpuOutOfMemoryError extends GpuError {
  constructor(message: string) {
    super(message);
    this.name = 'GpuOutOfMemoryError';
  }
}

export class DeviceLostError extends GpuError {
  constructor(message: string) {
    super(message);
    this.name = 'DeviceLostError';
  }
}
