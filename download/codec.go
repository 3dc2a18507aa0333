package download

import (
	"errors"
	"fmt"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
)

// WithDataBuffers returns the client option that lets a [Downloader] reuse
// the memory of its data messages: a DownloadService client made with it
// decodes each data message into a recycled buffer of [MaxDataMessage]
// bytes instead of a fresh one, and the Downloader recycles the buffer once
// the bytes are written and hashed. Without it a client allocates 1 MiB per
// data message, which the garbage collector then frees: in profiles of 1
// GiB downloads that allocation (page faults on new memory included) was
// about 40 % of the client's CPU (docs/benchmarks.md).
//
// The option replaces the client's "proto" codec (Connect and gRPC both use
// it; JSON clients are unaffected) with one that encodes like connect-go's
// and decodes like it too, except for a DownloadResponse that is one data
// field of at most MaxDataMessage bytes. Use it only for clients whose
// messages are read by a Downloader: it relies on the Downloader not
// keeping the bytes of a data message past writing them, as
// [io.WriterAt] and [io.Writer] require of their implementations.
func WithDataBuffers() connect.ClientOption {
	return connect.WithCodec(dataCodec{})
}

// dataBuffers holds *[]byte of cap MaxDataMessage for data messages.
var dataBuffers = sync.Pool{New: func() any {
	b := make([]byte, MaxDataMessage)
	return &b
}}

// recycleData returns p, the bytes of a data message the caller is done
// with, to the buffers [WithDataBuffers] decodes into. Slices of another
// capacity (from a client without the option) are left to the collector.
func recycleData(p []byte) {
	if cap(p) != MaxDataMessage {
		return
	}
	p = p[:cap(p)]
	dataBuffers.Put(&p)
}

// dataCodec is connect-go's "proto" codec, but for decoding a
// DownloadResponse that is one data field into a pooled buffer.
type dataCodec struct{}

var errNotProto = errors.New("not a protobuf message")

// Name implements connect.Codec.
func (dataCodec) Name() string { return "proto" }

// Marshal implements connect.Codec.
func (dataCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal %T: %w", m, errNotProto)
	}
	return proto.Marshal(pm)
}

// MarshalAppend lets connect-go marshal into its pooled buffers, as its own
// codec does.
func (dataCodec) MarshalAppend(b []byte, m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal %T: %w", m, errNotProto)
	}
	return proto.MarshalOptions{}.MarshalAppend(b, pm)
}

// Unmarshal implements connect.Codec. b belongs to connect-go, which reuses
// it once Unmarshal returns, so the data is copied either way.
func (dataCodec) Unmarshal(b []byte, m any) error {
	if res, ok := m.(*ferryv1.DownloadResponse); ok {
		if data, ok := onlyData(b); ok {
			bp := dataBuffers.Get().(*[]byte)
			res.Reset()
			res.Message = &ferryv1.DownloadResponse_Data{Data: append((*bp)[:0], data...)}
			return nil
		}
	}
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshal into %T: %w", m, errNotProto)
	}
	return proto.Unmarshal(b, pm)
}

// onlyData returns the bytes of field 2 (DownloadResponse.data) when b is
// exactly that one field, non-empty and at most MaxDataMessage bytes long.
func onlyData(b []byte) ([]byte, bool) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != 2 || typ != protowire.BytesType {
		return nil, false
	}
	data, m := protowire.ConsumeBytes(b[n:])
	if m < 0 || n+m != len(b) || len(data) == 0 || len(data) > MaxDataMessage {
		return nil, false
	}
	return data, true
}
