package store

import "hash/crc32"

// Castagnoli is the CRC32C table; hash/crc32 uses the CPU's CRC32
// instruction (SSE 4.2, ARMv8) with it.
var Castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C returns the CRC32C (Castagnoli) of b.
func CRC32C(b []byte) uint32 { return crc32.Checksum(b, Castagnoli) }

// CombineCRC32C returns the CRC32C of A followed by B, given crcA = CRC32C(A),
// crcB = CRC32C(B) and lenB = len(B) in bytes, without the bytes. This is
// zlib's crc32_combine for the Castagnoli polynomial: it costs O(log lenB)
// and lets a whole-object checksum be computed from per-part checksums.
func CombineCRC32C(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA
	}
	// odd is the operator for one zero bit; even for two, and so on: each
	// squaring doubles the number of zero bits the operator appends.
	var even, odd [32]uint32
	odd[0] = 0x82F63B78 // reversed Castagnoli polynomial
	row := uint32(1)
	for n := 1; n < 32; n++ {
		odd[n] = row
		row <<= 1
	}
	gf2Square(&even, &odd) // two zero bits
	gf2Square(&odd, &even) // four zero bits
	// Apply lenB zero bytes to crcA, one bit of lenB at a time.
	for {
		gf2Square(&even, &odd)
		if lenB&1 != 0 {
			crcA = gf2Times(&even, crcA)
		}
		lenB >>= 1
		if lenB == 0 {
			break
		}
		gf2Square(&odd, &even)
		if lenB&1 != 0 {
			crcA = gf2Times(&odd, crcA)
		}
		lenB >>= 1
		if lenB == 0 {
			break
		}
	}
	return crcA ^ crcB
}

func gf2Times(mat *[32]uint32, vec uint32) uint32 {
	var sum uint32
	for i := 0; vec != 0; i, vec = i+1, vec>>1 {
		if vec&1 != 0 {
			sum ^= mat[i]
		}
	}
	return sum
}

func gf2Square(square, mat *[32]uint32) {
	for n := 0; n < 32; n++ {
		square[n] = gf2Times(mat, mat[n])
	}
}
