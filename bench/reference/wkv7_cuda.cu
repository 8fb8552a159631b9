// WKV7 (clampw form) for the PyTorch reference step: forward with 16-step state
// checkpoints and the saved sa, and the "backstepping" backward, as the spec describes
// the official kernels (rwkv-peft-and-model-math.md §3.1-3.2). bf16 in and out, f32 math.
// Built by torch_bench.py with torch.utils.cpp_extension.load_inline.
//
// Per step, with decay = exp(-0.6065306597·σ(w_raw)):
//   sa[i] = Σ_j S[i][j]·a[j];  S[i][j] = S[i][j]·decay[j] + sa[i]·b[j] + v[i]·k[j];  y[i] = Σ_j S[i][j]·r[j]
// Tensors are [B, T, H, N] contiguous; one block of N threads per (head, sequence).
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_bf16.h>

constexpr int N = 64;
constexpr int CHUNK = 16;
typedef __nv_bfloat16 bf;

__device__ inline float f(bf x) { return __bfloat162float(x); }
__device__ inline float sigm(float x) { return 1.f / (1.f + __expf(-x)); }
__device__ inline float decayOf(float wr) { return __expf(-0.6065306597f * sigm(wr)); }

// Thread i keeps row i of S. States after steps 15, 31, ... go to s[b,h,chunk] transposed
// (element [j][i] = S[i][j]) so the backward's thread i reads its column contiguously.
__global__ void __launch_bounds__(N) wkv7_fwd(int T, int H, const bf* __restrict__ r, const bf* __restrict__ w,
                                              const bf* __restrict__ k, const bf* __restrict__ v, const bf* __restrict__ a,
                                              const bf* __restrict__ b, bf* __restrict__ y, float* __restrict__ s,
                                              float* __restrict__ sa_out) {
  const int bb = blockIdx.y, hh = blockIdx.x, i = threadIdx.x;
  float state[N];
#pragma unroll
  for (int j = 0; j < N; j++) state[j] = 0.f;
  __shared__ float q_[N], w_[N], k_[N], a_[N], b_[N];
  for (int t = 0; t < T; t++) {
    const int ind = ((bb * T + t) * H + hh) * N + i;
    __syncthreads();
    q_[i] = f(r[ind]);
    w_[i] = decayOf(f(w[ind]));
    k_[i] = f(k[ind]);
    a_[i] = f(a[ind]);
    b_[i] = f(b[ind]);
    __syncthreads();
    float sa = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) sa += a_[j] * state[j];
    sa_out[ind] = sa;
    const float vv = f(v[ind]);
    float yy = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) {
      state[j] = state[j] * w_[j] + sa * b_[j] + k_[j] * vv;
      yy += state[j] * q_[j];
    }
    y[ind] = __float2bfloat16_rn(yy);
    if ((t + 1) % CHUNK == 0) {
      const long base = ((long)(bb * H + hh) * (T / CHUNK) + t / CHUNK) * N * N;
#pragma unroll
      for (int j = 0; j < N; j++) s[base + j * N + i] = state[j];
    }
  }
}

// Thread i keeps column i of S (stateT[j] = S[j][i]), row i of dS (dstate[j] = dS[i][j])
// and column i of dS (dstateT[j] = dS[j][i]); S_{t-1} is recovered from S_t by undoing
// the step with the saved sa, and re-anchored on the checkpoints every 16 steps.
__global__ void __launch_bounds__(N) wkv7_bwd(int T, int H, const bf* __restrict__ r, const bf* __restrict__ w,
                                              const bf* __restrict__ k, const bf* __restrict__ v, const bf* __restrict__ a,
                                              const bf* __restrict__ b, const bf* __restrict__ dy, const float* __restrict__ s,
                                              const float* __restrict__ sa_in, bf* __restrict__ dr, bf* __restrict__ dw,
                                              bf* __restrict__ dk, bf* __restrict__ dv, bf* __restrict__ da, bf* __restrict__ db) {
  const int bb = blockIdx.y, hh = blockIdx.x, i = threadIdx.x;
  float stateT[N], dstate[N], dstateT[N];
#pragma unroll
  for (int j = 0; j < N; j++) stateT[j] = dstate[j] = dstateT[j] = 0.f;
  __shared__ float q_[N], w_[N], k_[N], v_[N], a_[N], b_[N], dy_[N], sa_[N], dsa_[N];
  for (int t = T - 1; t >= 0; t--) {
    const int ind = ((bb * T + t) * H + hh) * N + i;
    __syncthreads();
    const float wr = f(w[ind]);
    const float sg = sigm(wr);
    const float wi = __expf(-0.6065306597f * sg);
    q_[i] = f(r[ind]);
    w_[i] = wi;
    k_[i] = f(k[ind]);
    v_[i] = f(v[ind]);
    a_[i] = f(a[ind]);
    b_[i] = f(b[ind]);
    dy_[i] = f(dy[ind]);
    sa_[i] = sa_in[ind];
    __syncthreads();
    if ((t + 1) % CHUNK == 0) {
      const long base = ((long)(bb * H + hh) * (T / CHUNK) + t / CHUNK) * N * N;
#pragma unroll
      for (int j = 0; j < N; j++) stateT[j] = s[base + i * N + j];
    }
    float dri = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) dri += stateT[j] * dy_[j];
    dr[ind] = __float2bfloat16_rn(dri);
    const float iwi = 1.f / wi;
    const float ki = k_[i], bi = b_[i], qi = q_[i], dyi = dy_[i], ai = a_[i];
#pragma unroll
    for (int j = 0; j < N; j++) {
      stateT[j] = (stateT[j] - ki * v_[j] - bi * sa_[j]) * iwi;
      dstate[j] += dyi * q_[j];
      dstateT[j] += qi * dy_[j];
    }
    float dwi = 0.f, dki = 0.f, dvi = 0.f, dbi = 0.f, dsai = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) {
      dwi += dstateT[j] * stateT[j];
      dki += dstateT[j] * v_[j];
      dbi += dstateT[j] * sa_[j];
      dvi += dstate[j] * k_[j];
      dsai += dstate[j] * b_[j];
    }
    dw[ind] = __float2bfloat16_rn(dwi * wi * -0.6065306597f * sg * (1.f - sg));
    dk[ind] = __float2bfloat16_rn(dki);
    dv[ind] = __float2bfloat16_rn(dvi);
    db[ind] = __float2bfloat16_rn(dbi);
    __syncthreads();
    dsa_[i] = dsai;
    __syncthreads();
    float dai = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) dai += stateT[j] * dsa_[j];
    da[ind] = __float2bfloat16_rn(dai);
#pragma unroll
    for (int j = 0; j < N; j++) {
      dstate[j] = dstate[j] * w_[j] + dsai * a_[j];
      dstateT[j] = dstateT[j] * wi + ai * dsa_[j];
    }
  }
}

static void check(const torch::Tensor& x, const char* name) {
  TORCH_CHECK(x.is_cuda() && x.is_contiguous() && x.scalar_type() == torch::kBFloat16, name, " must be a contiguous bf16 CUDA tensor");
  TORCH_CHECK(x.dim() == 4 && x.size(3) == N, name, " must be [B, T, H, 64]");
  TORCH_CHECK(x.size(1) % CHUNK == 0, name, ": T must be a multiple of 16");
}

#define BF(x) reinterpret_cast<const bf*>(x.data_ptr())
#define BFW(x) reinterpret_cast<bf*>(x.data_ptr())

std::vector<torch::Tensor> wkv7_forward(torch::Tensor r, torch::Tensor w, torch::Tensor k, torch::Tensor v, torch::Tensor a, torch::Tensor b) {
  for (auto* x : {&r, &w, &k, &v, &a, &b}) check(*x, "wkv7 input");
  const int B = r.size(0), T = r.size(1), H = r.size(2);
  auto y = torch::empty_like(r);
  auto s = torch::empty({B, H, T / CHUNK, N, N}, r.options().dtype(torch::kFloat32));
  auto sa = torch::empty({B, T, H, N}, r.options().dtype(torch::kFloat32));
  wkv7_fwd<<<dim3(H, B), N, 0, at::cuda::getCurrentCUDAStream()>>>(T, H, BF(r), BF(w), BF(k), BF(v), BF(a), BF(b), BFW(y),
                                                                 s.data_ptr<float>(), sa.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {y, s, sa};
}

std::vector<torch::Tensor> wkv7_backward(torch::Tensor r, torch::Tensor w, torch::Tensor k, torch::Tensor v, torch::Tensor a,
                                         torch::Tensor b, torch::Tensor dy, torch::Tensor s, torch::Tensor sa) {
  for (auto* x : {&r, &w, &k, &v, &a, &b, &dy}) check(*x, "wkv7 input");
  const int B = r.size(0), T = r.size(1), H = r.size(2);
  auto dr = torch::empty_like(r), dw = torch::empty_like(r), dk = torch::empty_like(r);
  auto dv = torch::empty_like(r), da = torch::empty_like(r), db = torch::empty_like(r);
  wkv7_bwd<<<dim3(H, B), N, 0, at::cuda::getCurrentCUDAStream()>>>(T, H, BF(r), BF(w), BF(k), BF(v), BF(a), BF(b), BF(dy),
                                                                 s.data_ptr<float>(), sa.data_ptr<float>(), BFW(dr), BFW(dw),
                                                                 BFW(dk), BFW(dv), BFW(da), BFW(db));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {dr, dw, dk, dv, da, db};
}
