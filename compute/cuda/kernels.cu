// Kernels of the difftrain CUDA backend, compiled at run time with NVRTC
// (no headers: NVRTC's built-ins are enough). Row operations use one thread
// block per row; element-wise ones a grid-stride loop. Reductions are written
// in a fixed order so that results do not depend on scheduling: no atomics.
// Semantics are those of compute/compute.go; the Go side checks shapes.

#define NEG_INF __int_as_float(0xff800000)
#define FLT_MIN_NORMAL 1.17549435e-38f

typedef unsigned short bf16_t;

__device__ __forceinline__ float warp_sum(float v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ __forceinline__ float warp_max(float v) {
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

// Block-wide reductions; blockDim.x must be a multiple of 32 (at most 1024).
// Every thread gets the result.
__device__ float block_sum(float v) {
	__shared__ float sh[32];
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
	v = warp_sum(v);
	if (lane == 0) sh[w] = v;
	__syncthreads();
	v = lane < nw ? sh[lane] : 0.0f;
	v = warp_sum(v);
	__syncthreads();
	return v;
}

__device__ double block_sum_d(double v) {
	__shared__ double shd[32];
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
	v = warp_sum_d(v);
	if (lane == 0) shd[w] = v;
	__syncthreads();
	v = lane < nw ? shd[lane] : 0.0;
	v = warp_sum_d(v);
	__syncthreads();
	return v;
}

__device__ float block_max(float v) {
	__shared__ float shm[32];
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
	v = warp_max(v);
	if (lane == 0) shm[w] = v;
	__syncthreads();
	v = lane < nw ? shm[lane] : NEG_INF;
	v = warp_max(v);
	__syncthreads();
	return v;
}

#define GRID_STRIDE(i, n) \
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// ---- element-wise ----

extern "C" __global__ void k_scale(float *x, long long n, float a) {
	GRID_STRIDE(i, n) x[i] *= a;
}

extern "C" __global__ void k_axpy(float a, const float *x, float *y, long long n) {
	GRID_STRIDE(i, n) y[i] += a * x[i];
}

extern "C" __global__ void k_add_bias(float *x, const float *bias, long long rows, int cols) {
	GRID_STRIDE(i, rows * cols) x[i] += bias[i % cols];
}

extern "C" __global__ void k_relu_sq(const float *x, float *y, long long n) {
	GRID_STRIDE(i, n) {
		float r = fmaxf(x[i], 0.0f);
		y[i] = r * r;
	}
}

extern "C" __global__ void k_relu_sq_back(const float *x, const float *dy, float *dx, long long n) {
	GRID_STRIDE(i, n) dx[i] = dy[i] * 2.0f * fmaxf(x[i], 0.0f);
}

// Σ x² in two deterministic stages: per-block partials, then one block.
extern "C" __global__ void k_sumsq_part(const float *x, long long n, double *part) {
	double s = 0.0;
	GRID_STRIDE(i, n) {
		double v = (double)x[i];
		s += v * v;
	}
	s = block_sum_d(s);
	if (threadIdx.x == 0) part[blockIdx.x] = s;
}

extern "C" __global__ void k_sum_final(const double *part, int n, double *out) {
	double s = 0.0;
	for (int i = threadIdx.x; i < n; i += blockDim.x) s += part[i];
	s = block_sum_d(s);
	if (threadIdx.x == 0) out[0] = s;
}

// Column sums out[c] += Σ_r a[r,c]·(b ? b[r,c] : 1)·(rs ? rs[r] : 1), in two
// deterministic stages. k_col_sum_part: block (32, 8) sums 32 columns over
// the rows [y·chunk, (y+1)·chunk) of grid row y into part[y, c];
// k_col_sum_final adds the parts of each column in order.
extern "C" __global__ void k_col_sum_part(const float *a, const float *b, const float *rs, float *part, int rows,
                                          int cols, int chunk) {
	__shared__ float sh[8][33];
	int c = blockIdx.x * 32 + threadIdx.x;
	int lo = blockIdx.y * chunk, hi = min(rows, lo + chunk);
	float acc = 0.0f;
	if (c < cols) {
		for (int r = lo + threadIdx.y; r < hi; r += 8) {
			long long i = (long long)r * cols + c;
			float v = a[i];
			if (b) v *= b[i];
			if (rs) v *= rs[r];
			acc += v;
		}
	}
	sh[threadIdx.y][threadIdx.x] = acc;
	__syncthreads();
	if (threadIdx.y == 0 && c < cols) {
		float s = 0.0f;
		for (int j = 0; j < 8; j++) s += sh[j][threadIdx.x];
		part[(long long)blockIdx.y * cols + c] = s;
	}
}

extern "C" __global__ void k_col_sum_final(const float *part, float *out, int chunks, int cols) {
	for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x) {
		float s = 0.0f;
		for (int y = 0; y < chunks; y++) s += part[(long long)y * cols + c];
		out[c] += s;
	}
}

// ---- RMSNorm: y = (1+w)·x·rstd, one block per row ----

extern "C" __global__ void k_rmsnorm(const float *x, const float *w, float *y, float *rstd, int cols,
                                     float eps) {
	const float *xr = x + (long long)blockIdx.x * cols;
	float *yr = y + (long long)blockIdx.x * cols;
	float s = 0.0f;
	for (int j = threadIdx.x; j < cols; j += blockDim.x) s += xr[j] * xr[j];
	s = block_sum(s);
	float r = 1.0f / sqrtf(s / (float)cols + eps);
	for (int j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = (1.0f + w[j]) * xr[j] * r;
	if (threadIdx.x == 0) rstd[blockIdx.x] = r;
}

// dx = r·(g⊙dy − x·r²·mean(g⊙dy⊙x)), g = 1+w. Reads the whole row before
// writing, so dx may alias dy or x.
extern "C" __global__ void k_rmsnorm_back(const float *x, const float *w, const float *rstd,
                                          const float *dy, float *dx, int cols) {
	long long off = (long long)blockIdx.x * cols;
	const float *xr = x + off, *dyr = dy + off;
	float *dxr = dx + off;
	float r = rstd[blockIdx.x];
	float s = 0.0f;
	for (int j = threadIdx.x; j < cols; j += blockDim.x) s += (1.0f + w[j]) * dyr[j] * xr[j];
	s = block_sum(s);
	float c = r * r * s / (float)cols;
	for (int j = threadIdx.x; j < cols; j += blockDim.x) dxr[j] = r * ((1.0f + w[j]) * dyr[j] - xr[j] * c);
}

// ---- RoPE (NeoX rotate-half), angle n·θ^(−2i/Dh) in double ----

extern "C" __global__ void k_rope(float *x, int B, int N, int H, int Dh, double theta, int inverse) {
	int half = Dh / 2;
	long long total = (long long)B * N * H * half;
	GRID_STRIDE(idx, total) {
		int i = (int)(idx % half);
		long long th = idx / half; // token*H + head
		int h = (int)(th % H);
		long long t = th / H;
		int n = (int)(t % N);
		double ang = (double)n * pow(theta, -2.0 * (double)i / (double)Dh);
		double sn, cs;
		sincos(ang, &sn, &cs);
		float c = (float)cs, s = inverse ? -(float)sn : (float)sn;
		float *p = x + t * (long long)H * Dh + (long long)h * Dh;
		float x1 = p[i], x2 = p[i + half];
		p[i] = x1 * c - x2 * s;
		p[i + half] = x2 * c + x1 * s;
	}
}

// ---- embedding ----

extern "C" __global__ void k_embedding(const float *table, const int *ids, float *out, int dim) {
	const float *src = table + (long long)ids[blockIdx.x] * dim;
	float *dst = out + (long long)blockIdx.x * dim;
	for (int j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = src[j];
}

// One block per distinct id: dtable[id,:] += Σ dout[t,:] over its tokens, in
// token order (order/seg come from a stable counting sort on the host).
extern "C" __global__ void k_embedding_back(float *dtable, const int *order, const int *seg,
                                            const int *segid, const float *dout, int dim) {
	int lo = seg[blockIdx.x], hi = seg[blockIdx.x + 1];
	float *dst = dtable + (long long)segid[blockIdx.x] * dim;
	for (int j = threadIdx.x; j < dim; j += blockDim.x) {
		float acc = 0.0f;
		for (int k = lo; k < hi; k++) acc += dout[(long long)order[k] * dim + j];
		dst[j] += acc;
	}
}

// ---- attention ----
//
// Saved holds, for R = B*H*N query rows (row r = (b*H + h)*N + i):
//   P_tok [R, N]  probabilities of the N token keys   (offset 0)
//   P_snk [R]     probability of the sink key          (offset R*N)
//   D_tok [R, N]  soft-cap derivatives, 0 where masked (offset R*(N+1))
//   D_snk [R]                                          (offset R*(N+1) + R*N)
// so that cuBLAS reads P_tok with a row stride of N. On entry P_tok holds
// scale·q·k. G receives P_snk in the layout [H, B*N] for the sink GEMMs.
extern "C" __global__ void k_attn_softmax(float *P, float *G, const float *Q, const float *sinkK, const int *noise,
                                          int B, int N, int H, int Dh, float scale, float cap, int causal) {
	long long R = (long long)B * H * N;
	long long row = blockIdx.x;
	int i = (int)(row % N);
	int h = (int)((row / N) % H);
	int b = (int)(row / ((long long)N * H));
	long long t = (long long)b * N + i;
	float *ptok = P + row * N, *psnk = P + R * N + row;
	float *dtok = P + R * (N + 1) + row * N, *dsnk = P + R * (N + 1) + R * N + row;
	float s0 = NEG_INF;
	if (sinkK) {
		const float *q = Q + t * H * Dh + (long long)h * Dh;
		const float *k = sinkK + (long long)h * Dh;
		float acc = 0.0f;
		for (int j = threadIdx.x; j < Dh; j += blockDim.x) acc += q[j] * k[j];
		s0 = block_sum(acc) * scale;
	}
	int qnoisy = noise ? noise[t] : 1;
	const int *nb = noise ? noise + (long long)b * N : 0;
	// Pass 1: cap, mask, row maximum. Index j = 0 is the sink, j >= 1 key j-1.
	float mx = NEG_INF;
	for (int j = threadIdx.x; j <= N; j += blockDim.x) {
		float s = j == 0 ? s0 : ptok[j - 1];
		float dv = 1.0f;
		if (cap > 0.0f && s != NEG_INF) { // the sink is capped too; no sink: s0 = -inf
			float th = tanhf(s / cap);
			s = cap * th;
			dv = 1.0f - th * th;
		}
		if (j > 0 && !qnoisy) {
			int key = j - 1;
			bool ok = causal ? key <= i : nb[key] == 0;
			if (!ok) s = NEG_INF;
		}
		if (s == NEG_INF) dv = 0.0f;
		if (j == 0) {
			*psnk = s;
			*dsnk = dv;
		} else {
			ptok[j - 1] = s;
			dtok[j - 1] = dv;
		}
		mx = fmaxf(mx, s);
	}
	mx = block_max(mx);
	// Pass 2: exponentials and their sum; pass 3: normalise.
	float sum = 0.0f;
	for (int j = threadIdx.x; j <= N; j += blockDim.x) {
		float *pj = j == 0 ? psnk : ptok + (j - 1);
		float e = *pj == NEG_INF ? 0.0f : expf(*pj - mx);
		*pj = e;
		sum += e;
	}
	sum = block_sum(sum);
	float inv = 1.0f / sum;
	for (int j = threadIdx.x; j <= N; j += blockDim.x) {
		float *pj = j == 0 ? psnk : ptok + (j - 1);
		*pj *= inv;
	}
	__syncthreads();
	if (threadIdx.x == 0) G[(long long)h * B * N + t] = *psnk;
}

// X[t, h*Dh+j] += scale·G[h, t]·vec[h*Dh+j] over all B*N tokens.
extern "C" __global__ void k_attn_sink_add(float *X, const float *G, const float *vec, long long BN, int H,
                                           int Dh, float scale) {
	long long HD = (long long)H * Dh;
	GRID_STRIDE(idx, BN * HD) {
		long long t = idx / HD;
		int hd = (int)(idx % HD);
		int h = hd / Dh;
		X[idx] += scale * G[h * BN + t] * vec[hd];
	}
}

// Softmax and soft-cap backward for the rows of batch element b. S is
// [H, N, N] holding dL/dP_tok; it is overwritten with dL/d(scale·q·k). The
// sink's dL/dP is dOut·sinkV, computed here; its score gradient goes to G0
// and its probability to G1, both in the layout [H, B*N].
extern "C" __global__ void k_attn_softmax_back(float *S, const float *P, float *G0, float *G1, const float *dOut,
                                               const float *sinkV, int b, int B, int N, int H, int Dh) {
	long long R = (long long)B * H * N;
	long long lrow = blockIdx.x; // h*N + i within batch element b
	int i = (int)(lrow % N);
	int h = (int)(lrow / N);
	long long row = (long long)b * H * N + lrow;
	long long t = (long long)b * N + i;
	const float *ptok = P + row * N, *dtok = P + R * (N + 1) + row * N;
	float psnk = P[R * N + row], dsnk = P[R * (N + 1) + R * N + row];
	float *s = S + lrow * N;
	float dp0 = 0.0f;
	if (sinkV) {
		const float *g = dOut + t * H * Dh + (long long)h * Dh;
		const float *v = sinkV + (long long)h * Dh;
		float acc = 0.0f;
		for (int j = threadIdx.x; j < Dh; j += blockDim.x) acc += g[j] * v[j];
		dp0 = block_sum(acc);
	}
	float dot = 0.0f;
	for (int j = threadIdx.x; j < N; j += blockDim.x) dot += ptok[j] * s[j];
	dot = block_sum(dot) + psnk * dp0;
	for (int j = threadIdx.x; j < N; j += blockDim.x) s[j] = ptok[j] * (s[j] - dot) * dtok[j];
	if (threadIdx.x == 0) {
		G0[(long long)h * B * N + t] = psnk * (dp0 - dot) * dsnk;
		G1[(long long)h * B * N + t] = psnk;
	}
}

// ---- GIDD loss (gidd-spec §2), one block per token ----

__device__ __forceinline__ float safe_log(float x) { return logf(fmaxf(x, FLT_MIN_NORMAL)); }

extern "C" __global__ void k_gidd_loss(float *logits, const int *labels, const int *noisy, const float *params,
                                       float *out, int V, int mask, float beta_is, int grad) {
	long long t = blockIdx.x;
	float *l = logits + t * V;
	const float *pr = params + t * 6; // compute.LossParamStride
	// 1 - alpha comes from the host (pr[5], compute.LPNoiseRate): 1.0f - alpha
	// keeps three digits near lambda = 9.
	float alpha = pr[0], a = pr[1], wtr = pr[2], wel = pr[3], gs = pr[4], oma = pr[5];
	int x = labels[t], z = noisy[t];
	float piu = a / (float)(V - 1), pim = 1.0f - a;

	float mx = NEG_INF;
	for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, v == mask ? -1e6f : l[v]);
	mx = block_max(mx);
	double zs = 0.0;
	for (int v = threadIdx.x; v < V; v += blockDim.x) zs += (double)expf((v == mask ? -1e6f : l[v]) - mx);
	zs = block_sum_d(zs);
	float invz = (float)(1.0 / zs);

	// q, p and the IS term at z.
	float lz = z == mask ? -1e6f : l[z];
	float xz = expf(lz - mx) * invz;
	float piz = z == mask ? pim : piu;
	float qz = oma * piz + (z == x ? alpha : 0.0f);
	float pz = alpha * xz + oma * piz;
	float is = qz / (pz + 1e-12f) - (safe_log(qz) - safe_log(pz)) - 1.0f;
	float dis = -qz / ((pz + 1e-12f) * (pz + 1e-12f)) + (pz > FLT_MIN_NORMAL ? 1.0f / pz : 0.0f);

	double kl = 0.0, dot = 0.0;
	for (int v = threadIdx.x; v < V; v += blockDim.x) {
		float xh = expf((v == mask ? -1e6f : l[v]) - mx) * invz;
		float pi = v == mask ? pim : piu;
		float q = oma * pi + (v == x ? alpha : 0.0f);
		float p = alpha * xh + oma * pi;
		kl += (double)(q * (safe_log(q) - safe_log(p)));
		if (grad) {
			float gp = p > FLT_MIN_NORMAL ? -q / p : 0.0f;
			if (v == z) gp += beta_is * dis;
			dot += (double)xh * (double)(alpha * wtr * gp);
		}
	}
	kl = block_sum_d(kl);
	float klf = (float)kl;
	if (threadIdx.x == 0) {
		float *o = out + t * 4;
		o[0] = wtr * klf + beta_is * wtr * is;
		o[1] = wtr * klf;
		o[2] = wtr * is;
		o[3] = wel * (klf + is);
	}
	if (!grad) return;
	dot = block_sum_d(dot);
	float dotf = (float)dot;
	__syncthreads(); // every thread has read l[z] and l[v] above
	for (int v = threadIdx.x; v < V; v += blockDim.x) {
		if (v == mask) {
			l[v] = 0.0f;
			continue;
		}
		float xh = expf(l[v] - mx) * invz;
		float pi = piu;
		float q = oma * pi + (v == x ? alpha : 0.0f);
		float p = alpha * xh + oma * pi;
		float gp = p > FLT_MIN_NORMAL ? -q / p : 0.0f;
		if (v == z) gp += beta_is * dis;
		l[v] = gs * xh * (alpha * wtr * gp - dotf);
	}
}

// ---- optimizers (compute.OptStep); bias-correction factors from the host ----

extern "C" __global__ void k_laprop(float *p, const float *g, float *m, float *v, long long n, float lr, float wd,
                                    float b1, float b2, float eps) {
	GRID_STRIDE(i, n) {
		float gi = g[i];
		float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
		float gh = gi / (sqrtf(vi) + eps);
		float mi = b1 * m[i] + (1.0f - b1) * gh;
		v[i] = vi;
		m[i] = mi;
		p[i] -= lr * (mi + wd * p[i]);
	}
}

extern "C" __global__ void k_adamw(float *p, const float *g, float *m, float *v, long long n, float lr, float wd,
                                   float beta1, float beta2, float bc1, float bc2, float eps) {
	GRID_STRIDE(i, n) {
		float gi = g[i];
		float mi = beta1 * m[i] + (1.0f - beta1) * gi;
		float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
		m[i] = mi;
		v[i] = vi;
		p[i] -= lr * ((mi / bc1) / (sqrtf(vi / bc2) + eps) + wd * p[i]);
	}
}

// ---- conversions for bf16 GEMM operands and the gradient codecs ----

// Round to nearest even; NaN stays a (quiet) NaN.
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
	unsigned u = __float_as_uint(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);
	u += 0x7fffu + ((u >> 16) & 1u);
	return (bf16_t)(u >> 16);
}

extern "C" __global__ void k_f32_to_bf16(const float *x, bf16_t *y, long long n) {
	GRID_STRIDE(i, n) y[i] = f32_to_bf16(x[i]);
}

// One block per quantisation block of `block` elements (the last may be
// shorter): scale = max|x|/127, q = round-half-even(x/scale), 0 when scale is 0
// or x/scale is NaN.
extern "C" __global__ void k_q8_block(const float *x, signed char *q, float *scales, long long n, int block) {
	long long lo = (long long)blockIdx.x * block;
	long long hi = lo + block < n ? lo + block : n;
	float m = 0.0f;
	for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) m = fmaxf(m, fabsf(x[i]));
	m = block_max(m);
	float scale = m / 127.0f;
	for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
		float r = scale > 0.0f ? rintf(x[i] / scale) : 0.0f;
		if (r != r) r = 0.0f; // NaN
		r = fminf(fmaxf(r, -127.0f), 127.0f);
		q[i] = (signed char)(int)r;
	}
	if (threadIdx.x == 0) scales[blockIdx.x] = scale;
}
