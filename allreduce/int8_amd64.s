#include "textflag.h"

// AVX2 kernels of the int8 codec (int8_amd64.go), on lengths of a
// multiple of 16 or 32 elements; the Go code does the rest.

// VPERMD indices that undo the lane interleaving of VPACKSSDW+VPACKSSWB.
DATA permIdx<>+0(SB)/4, $0
DATA permIdx<>+4(SB)/4, $4
DATA permIdx<>+8(SB)/4, $1
DATA permIdx<>+12(SB)/4, $5
DATA permIdx<>+16(SB)/4, $2
DATA permIdx<>+20(SB)/4, $6
DATA permIdx<>+24(SB)/4, $3
DATA permIdx<>+28(SB)/4, $7
GLOBL permIdx<>(SB), RODATA|NOPTR, $32

// The loops that the one-block and the whole-block kernels share, as
// macros: each expands inside one TEXT, whose labels are its own.

// QUANT_CONSTS loads the quantisation constants: Y13 = 1.5·2^23 (adding
// it rounds to an integer, ties to even), Y12 its mantissa mask, Y11 the
// offset that makes the masked bits a signed integer, Y10 permIdx.
#define QUANT_CONSTS \
	MOVL $0x4b400000, AX \
	MOVL AX, X13 \
	VPBROADCASTD X13, Y13 \
	MOVL $0x007fffff, AX \
	MOVL AX, X12 \
	VPBROADCASTD X12, Y12 \
	MOVL $0x00400000, AX \
	MOVL AX, X11 \
	VPBROADCASTD X11, Y11 \
	VMOVDQU permIdx<>(SB), Y10

// ABSMAX_LOOP folds CX groups of 32 values at ptr (advanced past them),
// their sign bits cleared by mask, into the maxima Y0–Y3.
#define ABSMAX_LOOP(ptr, mask) \
maxloop: \
	VPAND   (ptr), mask, Y4 \
	VPAND   32(ptr), mask, Y5 \
	VPAND   64(ptr), mask, Y6 \
	VPAND   96(ptr), mask, Y7 \
	VPMAXUD Y4, Y0, Y0 \
	VPMAXUD Y5, Y1, Y1 \
	VPMAXUD Y6, Y2, Y2 \
	VPMAXUD Y7, Y3, Y3 \
	ADDQ    $128, ptr \
	DECQ    CX \
	JNZ     maxloop

// MAX_REDUCE reduces the maxima Y0–Y3 to one, in AX.
#define MAX_REDUCE \
	VPMAXUD      Y1, Y0, Y0 \
	VPMAXUD      Y3, Y2, Y2 \
	VPMAXUD      Y2, Y0, Y0 \
	VEXTRACTI128 $1, Y0, X1 \
	VPMAXUD      X1, X0, X0 \
	VPSHUFD      $0x4e, X0, X1 \
	VPMAXUD      X1, X0, X0 \
	VPSHUFD      $0xb1, X0, X1 \
	VPMAXUD      X1, X0, X0 \
	MOVL         X0, AX

// QUANT_LOOP quantises CX groups of 32 values at SI into DI with inv Y15
// and scale Y14 (ties to even), writing v − q·scale to R8 and q·scale to R9
// where they are not nil, and advances all four pointers.
#define QUANT_LOOP \
loop: \
	VMOVUPS (SI), Y0 \
	VMOVUPS 32(SI), Y1 \
	VMOVUPS 64(SI), Y2 \
	VMOVUPS 96(SI), Y3 \
	VMULPS  Y15, Y0, Y4 \
	VMULPS  Y15, Y1, Y5 \
	VMULPS  Y15, Y2, Y6 \
	VMULPS  Y15, Y3, Y7 \
	VADDPS  Y13, Y4, Y4 \
	VADDPS  Y13, Y5, Y5 \
	VADDPS  Y13, Y6, Y6 \
	VADDPS  Y13, Y7, Y7 \
	VPAND   Y12, Y4, Y4 \
	VPAND   Y12, Y5, Y5 \
	VPAND   Y12, Y6, Y6 \
	VPAND   Y12, Y7, Y7 \
	VPSUBD  Y11, Y4, Y4 \
	VPSUBD  Y11, Y5, Y5 \
	VPSUBD  Y11, Y6, Y6 \
	VPSUBD  Y11, Y7, Y7 \
	TESTQ   R8, R8 \
	JNZ     decoded \
	TESTQ   R9, R9 \
	JZ      pack \
 \
decoded: \
	VCVTDQ2PS Y4, Y8 \
	VCVTDQ2PS Y5, Y9 \
	VMULPS    Y14, Y8, Y8 \
	VMULPS    Y14, Y9, Y9 \
	TESTQ     R9, R9 \
	JZ        res01 \
	VMOVUPS   Y8, (R9) \
	VMOVUPS   Y9, 32(R9) \
 \
res01: \
	TESTQ   R8, R8 \
	JZ      next23 \
	VSUBPS  Y8, Y0, Y8 \
	VSUBPS  Y9, Y1, Y9 \
	VMOVUPS Y8, (R8) \
	VMOVUPS Y9, 32(R8) \
 \
next23: \
	VCVTDQ2PS Y6, Y8 \
	VCVTDQ2PS Y7, Y9 \
	VMULPS    Y14, Y8, Y8 \
	VMULPS    Y14, Y9, Y9 \
	TESTQ     R9, R9 \
	JZ        res23 \
	VMOVUPS   Y8, 64(R9) \
	VMOVUPS   Y9, 96(R9) \
	ADDQ      $128, R9 \
 \
res23: \
	TESTQ   R8, R8 \
	JZ      pack \
	VSUBPS  Y8, Y2, Y8 \
	VSUBPS  Y9, Y3, Y9 \
	VMOVUPS Y8, 64(R8) \
	VMOVUPS Y9, 96(R8) \
	ADDQ    $128, R8 \
 \
pack: \
	VPACKSSDW Y5, Y4, Y4 \
	VPACKSSDW Y7, Y6, Y6 \
	VPACKSSWB Y6, Y4, Y4 \
	VPERMD    Y4, Y10, Y4 \
	VMOVDQU   Y4, (DI) \
	ADDQ      $128, SI \
	ADDQ      $32, DI \
	DECQ      CX \
	JNZ       loop

// DEQ_LOOP decodes CX groups of 16 int8 values at SI into DI with scale
// Y14: dst = q·scale, or with DX set dst += (add at R8 if not nil) +
// q·scale; it advances SI, DI and R8.
#define DEQ_LOOP \
dloop: \
	VPMOVSXBD (SI), Y0 \
	VPMOVSXBD 8(SI), Y1 \
	VCVTDQ2PS Y0, Y0 \
	VCVTDQ2PS Y1, Y1 \
	VMULPS    Y14, Y0, Y0 \
	VMULPS    Y14, Y1, Y1 \
	TESTQ     DX, DX \
	JZ        dstore \
	VMOVUPS   (DI), Y2 \
	VMOVUPS   32(DI), Y3 \
	TESTQ     R8, R8 \
	JZ        dsum \
	VADDPS    (R8), Y2, Y2 \
	VADDPS    32(R8), Y3, Y3 \
	ADDQ      $64, R8 \
 \
dsum: \
	VADDPS Y0, Y2, Y0 \
	VADDPS Y1, Y3, Y1 \
 \
dstore: \
	VMOVUPS Y0, (DI) \
	VMOVUPS Y1, 32(DI) \
	ADDQ    $64, DI \
	ADDQ    $16, SI \
	DECQ    CX \
	JNZ     dloop

// func absMaxAVX2(v []float32) uint32
TEXT ·absMaxAVX2(SB), NOSPLIT, $0-28
	MOVQ v_base+0(FP), SI
	MOVQ v_len+8(FP), CX
	SHRQ $5, CX
	MOVL $0x7fffffff, AX
	MOVL AX, X12
	VPBROADCASTD X12, Y12
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	TESTQ CX, CX
	JZ    reduce

	ABSMAX_LOOP(SI, Y12)

reduce:
	MAX_REDUCE
	MOVL        AX, ret+24(FP)
	VZEROUPPER
	RET

// func quantAVX2(q []byte, v, res, out []float32, inv, scale float32)
// q[i] = round(v[i]·inv) (ties to even, by adding 1.5·2^23); if res is not
// nil res[i] = v[i] − q[i]·scale; if out is not nil out[i] = q[i]·scale.
TEXT ·quantAVX2(SB), NOSPLIT, $0-104
	MOVQ q_base+0(FP), DI
	MOVQ v_base+24(FP), SI
	MOVQ v_len+32(FP), CX
	MOVQ res_base+48(FP), R8
	MOVQ out_base+72(FP), R9
	VBROADCASTSS inv+96(FP), Y15
	VBROADCASTSS scale+100(FP), Y14
	QUANT_CONSTS
	SHRQ $5, CX
	TESTQ CX, CX
	JZ    done

	QUANT_LOOP

done:
	VZEROUPPER
	RET

// func deqAVX2(dst []float32, q []byte, add []float32, scale float32, acc bool)
// dst[i] = q[i]·scale, or with acc dst[i] = dst[i] (+ add[i] if add is not
// nil) + q[i]·scale; len(dst) is a multiple of 16.
TEXT ·deqAVX2(SB), NOSPLIT, $0-77
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ q_base+24(FP), SI
	MOVQ add_base+48(FP), R8
	VBROADCASTSS scale+72(FP), Y14
	MOVBLZX acc+76(FP), DX
	SHRQ $4, CX
	TESTQ CX, CX
	JZ    ddone

	DEQ_LOOP

ddone:
	VZEROUPPER
	RET

// func addAVX2(dst, a, b []float32)
// dst[i] = a[i] + b[i]; len(dst) is a multiple of 16.
TEXT ·addAVX2(SB), NOSPLIT, $0-72
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ a_base+24(FP), SI
	MOVQ b_base+48(FP), R8
	SHRQ $4, CX
	TESTQ CX, CX
	JZ    adone

aloop:
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VADDPS  (R8), Y0, Y0
	VADDPS  32(R8), Y1, Y1
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	ADDQ    $64, DI
	ADDQ    $64, SI
	ADDQ    $64, R8
	DECQ    CX
	JNZ     aloop

adone:
	VZEROUPPER
	RET

// func quantBlocksAVX2(p []byte, v, res, out []float32, block int) int
// Encodes whole blocks of v (block a multiple of 32) into p as int8Block
// does, per block its scale then its quantised values, writing res and out
// where not nil. Stops before a block whose largest magnitude is a nonzero
// subnormal (127/max overflows: the Go code takes it) and returns the
// number of elements done.
TEXT ·quantBlocksAVX2(SB), NOSPLIT, $0-112
	MOVQ p_base+0(FP), DI
	MOVQ v_base+24(FP), SI
	MOVQ v_len+32(FP), BX
	MOVQ res_base+48(FP), R8
	MOVQ out_base+72(FP), R9
	MOVQ block+96(FP), R10
	XORQ R11, R11
	QUANT_CONSTS

bloop:
	CMPQ BX, R10
	JB   bdone
	// The block's largest magnitude, as bits.
	MOVL $0x7fffffff, AX
	MOVL AX, X8
	VPBROADCASTD X8, Y8
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	MOVQ  R10, CX
	SHRQ  $5, CX
	MOVQ  SI, DX

	ABSMAX_LOOP(DX, Y8)
	MAX_REDUCE

	// scale = max/127 and inv = 127/max; a NaN scale and inv 0 for a
	// block with a NaN or an infinity; 0 and 0 for a zero block.
	CMPL  AX, $0x7f800000
	JAE   bnan
	TESTL AX, AX
	JZ    bzero
	MOVL  AX, X5
	MOVL  $0x42fe0000, DX // 127.0
	MOVL  DX, X6
	VDIVSS X5, X6, X7 // inv
	MOVL  X7, DX
	CMPL  DX, $0x7f800000
	JAE   bdone // 127/max overflows: max is subnormal
	VDIVSS X6, X5, X8 // scale
	JMP   bquant

bnan:
	MOVL   $0x7fc00000, DX
	MOVL   DX, X8
	VXORPS X7, X7, X7
	JMP    bquant

bzero:
	VXORPS X7, X7, X7
	VXORPS X8, X8, X8

bquant:
	MOVL         X8, DX
	MOVL         DX, (DI)
	ADDQ         $4, DI
	VBROADCASTSS X7, Y15
	VBROADCASTSS X8, Y14
	MOVQ         R10, CX
	SHRQ         $5, CX

	QUANT_LOOP

	SUBQ R10, BX
	ADDQ R10, R11
	JMP  bloop

bdone:
	MOVQ R11, ret+104(FP)
	VZEROUPPER
	RET

// func deqBlocksAVX2(dst []float32, p []byte, add []float32, block int, acc bool)
// Decodes whole blocks (block a multiple of 16) of an int8 payload p, per
// block its scale then its values, as deqAVX2 does for one block.
TEXT ·deqBlocksAVX2(SB), NOSPLIT, $0-81
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), BX
	MOVQ p_base+24(FP), SI
	MOVQ add_base+48(FP), R8
	MOVQ block+72(FP), R10
	MOVBLZX acc+80(FP), DX

eloop:
	CMPQ BX, R10
	JB   edone
	VBROADCASTSS (SI), Y14
	ADDQ         $4, SI
	MOVQ         R10, CX
	SHRQ         $4, CX

	DEQ_LOOP

	SUBQ R10, BX
	JMP  eloop

edone:
	VZEROUPPER
	RET
