#include "textflag.h"

// AVX2 kernels of the bf16 codec (bf16_amd64.go); lengths are multiples of
// 16, the Go code does the rest.

// func bf16EncAVX2(h []uint16, v, out []float32)
// h[i] = v[i] rounded to bfloat16 (to nearest even; a NaN stays a quiet
// NaN); if out is not nil, out[i] = h[i] as a float32.
TEXT ·bf16EncAVX2(SB), NOSPLIT, $0-72
	MOVQ h_base+0(FP), DI
	MOVQ v_base+24(FP), SI
	MOVQ v_len+32(FP), CX
	MOVQ out_base+48(FP), R9
	MOVL $0x7fffffff, AX
	MOVL AX, X12
	VPBROADCASTD X12, Y12
	MOVL $0x7f800000, AX
	MOVL AX, X11
	VPBROADCASTD X11, Y11
	MOVL $0x7fff, AX
	MOVL AX, X10
	VPBROADCASTD X10, Y10
	MOVL $1, AX
	MOVL AX, X9
	VPBROADCASTD X9, Y9
	MOVL $0x00400000, AX
	MOVL AX, X8
	VPBROADCASTD X8, Y8
	SHRQ $4, CX
	TESTQ CX, CX
	JZ    edone

eloop:
	VMOVDQU (SI), Y0
	VMOVDQU 32(SI), Y1
	// rounded = (b + 0x7fff + (b>>16 & 1)) >> 16
	VPSRLD   $16, Y0, Y2
	VPSRLD   $16, Y1, Y3
	VPAND    Y9, Y2, Y2
	VPAND    Y9, Y3, Y3
	VPADDD   Y10, Y0, Y4
	VPADDD   Y10, Y1, Y5
	VPADDD   Y2, Y4, Y4
	VPADDD   Y3, Y5, Y5
	// NaN (|b| > 0x7f800000): b | 0x00400000 instead
	VPAND    Y12, Y0, Y2
	VPAND    Y12, Y1, Y3
	VPCMPGTD Y11, Y2, Y2
	VPCMPGTD Y11, Y3, Y3
	VPOR     Y8, Y0, Y6
	VPOR     Y8, Y1, Y7
	VPBLENDVB Y2, Y6, Y4, Y4
	VPBLENDVB Y3, Y7, Y5, Y5
	VPSRLD   $16, Y4, Y4
	VPSRLD   $16, Y5, Y5
	TESTQ    R9, R9
	JZ       epack
	VPSLLD   $16, Y4, Y6
	VPSLLD   $16, Y5, Y7
	VMOVDQU  Y6, (R9)
	VMOVDQU  Y7, 32(R9)
	ADDQ     $64, R9

epack:
	VPACKUSDW Y5, Y4, Y4
	VPERMQ    $0xd8, Y4, Y4
	VMOVDQU   Y4, (DI)
	ADDQ      $64, SI
	ADDQ      $32, DI
	DECQ      CX
	JNZ       eloop

edone:
	VZEROUPPER
	RET

// func bf16DecAVX2(dst []float32, h []uint16, acc bool)
// dst[i] = h[i] as a float32, or with acc dst[i] += it.
TEXT ·bf16DecAVX2(SB), NOSPLIT, $0-49
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ h_base+24(FP), SI
	MOVBLZX acc+48(FP), DX
	SHRQ $4, CX
	TESTQ CX, CX
	JZ    ddone

dloop:
	VPMOVZXWD (SI), Y0
	VPMOVZXWD 16(SI), Y1
	VPSLLD    $16, Y0, Y0
	VPSLLD    $16, Y1, Y1
	TESTQ     DX, DX
	JZ        dstore
	VADDPS    (DI), Y0, Y0
	VADDPS    32(DI), Y1, Y1

dstore:
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	ADDQ    $64, DI
	ADDQ    $32, SI
	DECQ    CX
	JNZ     dloop

ddone:
	VZEROUPPER
	RET
