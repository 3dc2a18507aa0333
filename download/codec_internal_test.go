package download

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
)

// TestDataCodecDecodesLikeProto checks that the codec of WithDataBuffers
// decodes every DownloadResponse as proto.Unmarshal does, on the fast path
// (one data field) and off it, and encodes as proto.Marshal does.
func TestDataCodecDecodesLikeProto(t *testing.T) {
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + 3)
		}
		return b
	}
	msgs := map[string]*ferryv1.DownloadResponse{
		"header": {Message: &ferryv1.DownloadResponse_Header{Header: &ferryv1.DownloadHeader{
			Object: &ferryv1.Object{Key: "k", Size: 5, Etag: "e"}, Offset: 1, Length: 4,
		}}},
		"one byte":           {Message: &ferryv1.DownloadResponse_Data{Data: data(1)}},
		"full message":       {Message: &ferryv1.DownloadResponse_Data{Data: data(MaxDataMessage)}},
		"over a full buffer": {Message: &ferryv1.DownloadResponse_Data{Data: data(MaxDataMessage + 1)}},
		"empty data":         {Message: &ferryv1.DownloadResponse_Data{Data: []byte{}}},
		"empty":              {},
	}
	encoded := map[string][]byte{}
	for name, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		encoded[name] = b
		got, err := dataCodec{}.MarshalAppend([]byte("x"), m)
		if err != nil || !bytes.Equal(got, append([]byte("x"), b...)) {
			t.Errorf("%s: MarshalAppend differs from proto.Marshal (err %v)", name, err)
		}
	}
	// Off the fast path: a data field followed by an unknown field, and a
	// header after a data field (the last member of a oneof wins).
	d := encoded["one byte"]
	encoded["data and unknown field"] = protowire.AppendBytes(protowire.AppendTag(bytes.Clone(d), 9, protowire.BytesType), []byte("u"))
	encoded["data then header"] = append(bytes.Clone(d), encoded["header"]...)
	encoded["truncated"] = encoded["full message"][:100]

	for name, b := range encoded {
		want := &ferryv1.DownloadResponse{}
		wantErr := proto.Unmarshal(b, want)
		got := &ferryv1.DownloadResponse{Message: &ferryv1.DownloadResponse_Data{Data: []byte("stale")}}
		gotErr := dataCodec{}.Unmarshal(b, got)
		if (gotErr != nil) != (wantErr != nil) {
			t.Errorf("%s: error %v, proto.Unmarshal's %v", name, gotErr, wantErr)
			continue
		}
		if wantErr == nil && !proto.Equal(got, want) {
			t.Errorf("%s: decoded %v, proto.Unmarshal %v", name, got, want)
		}
		_, fast := onlyData(b)
		if wantFast := name == "one byte" || name == "full message"; fast != wantFast {
			t.Errorf("%s: on the pooled path %v, want %v", name, fast, wantFast)
		}
	}
}
