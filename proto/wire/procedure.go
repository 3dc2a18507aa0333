// Package wire is the hand-written half of ferry's wire contract, beside
// the code generated from proto/ferry/v1: what both ends of an RPC must
// agree on that the .proto files cannot say. This file lists ferry's
// procedures and what kind each is, so that the limits, authorization and
// telemetry decide from one table rather than each on its own.
package wire

import (
	ferryv1connect "github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
)

// MaxControlMessageBytes is the largest request message of a procedure
// that carries no object data (every procedure but Upload and PutChunk),
// and of the first message of an Upload stream (its header), in bytes:
// 64 KiB. The largest real one, a CreateUploadRequest with a 1,024-byte key
// and 2 KiB of metadata, is well under 8 KiB in protobuf and under 32 KiB
// in JSON even with every character escaped. Servers refuse a larger
// message with RESOURCE_EXHAUSTED before reading it.
const MaxControlMessageBytes = 64 << 10

// Kind says what a procedure's requests carry.
type Kind int

const (
	// Control procedures have small request messages (at most
	// [MaxControlMessageBytes]) and small responses.
	Control Kind = iota
	// Upload procedures (Upload, PutChunk) carry chunk data in their
	// request messages, up to the server's largest chunk.
	Upload
	// Download procedures stream object data to the client; their request
	// is small.
	Download
)

// String returns "control", "upload" or "download".
func (k Kind) String() string {
	switch k {
	case Upload:
		return "upload"
	case Download:
		return "download"
	}
	return "control"
}

// Procedure describes one of ferry's RPCs.
type Procedure struct {
	// Name is the procedure's HTTP path, such as
	// "/ferry.v1.UploadService/Upload".
	Name string
	// Kind says what its messages carry.
	Kind Kind
	// Write reports whether it changes objects or uploads, so that it
	// needs a token with write rights. Procedures that name an upload by
	// its ID count as writes, since only a writer of the upload's key may
	// use it.
	Write bool
	// Stream reports whether the client sends a stream of messages (the
	// first of which is a small header).
	Stream bool
}

// Transfer reports whether the procedure moves object data (an upload or
// a download), which servers count against their stream limits.
func (p Procedure) Transfer() bool { return p.Kind != Control }

// Procedures lists every ferry RPC.
var Procedures = []Procedure{
	{Name: ferryv1connect.UploadServiceUploadProcedure, Kind: Upload, Write: true, Stream: true},
	{Name: ferryv1connect.UploadServicePutChunkProcedure, Kind: Upload, Write: true},
	{Name: ferryv1connect.UploadServiceCreateUploadProcedure, Kind: Control, Write: true},
	{Name: ferryv1connect.UploadServiceGetUploadProcedure, Kind: Control, Write: true},
	{Name: ferryv1connect.UploadServiceCompleteUploadProcedure, Kind: Control, Write: true},
	{Name: ferryv1connect.UploadServiceAbortUploadProcedure, Kind: Control, Write: true},
	{Name: ferryv1connect.DownloadServiceDownloadProcedure, Kind: Download},
	{Name: ferryv1connect.ObjectServiceStatObjectProcedure, Kind: Control},
	{Name: ferryv1connect.ObjectServiceListObjectsProcedure, Kind: Control},
	{Name: ferryv1connect.ObjectServiceDeleteObjectProcedure, Kind: Control, Write: true},
}

var byName = func() map[string]Procedure {
	m := make(map[string]Procedure, len(Procedures))
	for _, p := range Procedures {
		m[p.Name] = p
	}
	return m
}()

// Lookup returns the procedure whose HTTP path is path. The match is
// exact: connect-go routes only exact paths.
func Lookup(path string) (Procedure, bool) {
	p, ok := byName[path]
	return p, ok
}

// Label returns path if it names a ferry procedure and "unknown"
// otherwise: the value to log or label metrics with for a request whose
// path the client chose, so that invented paths cannot grow the set of
// metric series or flood logs.
func Label(path string) string {
	if _, ok := byName[path]; ok {
		return path
	}
	return "unknown"
}
