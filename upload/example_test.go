package upload_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"

	"github.com/ferryhq/ferry/download"
	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/diskstore"
	"github.com/ferryhq/ferry/upload"
)

// startExampleServer serves an UploadService on a disk store in a temporary
// directory, over HTTP/1.1 and h2c, and returns its URL and a function that
// stops it.
func startExampleServer() (string, func()) {
	dir, err := os.MkdirTemp("", "ferry-example-")
	if err != nil {
		log.Fatal(err)
	}
	st, err := diskstore.New(dir)
	if err != nil {
		log.Fatal(err)
	}
	svc, err := upload.NewService(upload.Config{Store: st})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(ferryv1connect.NewUploadServiceHandler(svc, connect.WithReadMaxBytes(upload.DefaultMaxChunkSize+1<<20)))
	mux.Handle(ferryv1connect.NewObjectServiceHandler(download.NewObjectService(st)))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	return srv.URL, func() {
		srv.Close()
		os.RemoveAll(dir)
	}
}

// h2cClient is an HTTP client that speaks HTTP/2 over cleartext, as gRPC
// needs on an http:// URL.
func h2cClient() *http.Client {
	t := &http.Transport{Protocols: new(http.Protocols)}
	t.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: t}
}

// An Uploader sends a file of known size in chunks over parallel streams
// and checks the stored object's CRC32C against the data's.
func ExampleUploader_Upload() {
	url, stop := startExampleServer()
	defer stop()

	client := ferryv1connect.NewUploadServiceClient(h2cClient(), url, connect.WithGRPC())
	uploader := upload.NewUploader(client, upload.UploaderOptions{
		ChunkSize:   5 << 20, // 5 MiB, S3's smallest part
		Concurrency: 4,
	})
	data := bytes.Repeat([]byte("ferry "), 2<<20) // 12 MiB: three chunks
	obj, err := uploader.Upload(context.Background(), "examples/ferry.txt", bytes.NewReader(data), int64(len(data)), upload.ObjectOptions{
		ContentType: "text/plain",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(obj.GetKey(), obj.GetSize(), obj.GetContentType(), obj.GetCrc32C() == store.CRC32C(data))
	// Output: examples/ferry.txt 12582912 text/plain true
}

// UploadStream takes input of unknown length, such as standard input, over
// any of the three protocols; here gRPC-Web over HTTP/1.1.
func ExampleUploader_UploadStream() {
	url, stop := startExampleServer()
	defer stop()

	client := ferryv1connect.NewUploadServiceClient(http.DefaultClient, url, connect.WithGRPCWeb())
	uploader := upload.NewUploader(client, upload.UploaderOptions{})
	input := strings.NewReader(strings.Repeat("a line of a log\n", 1000))
	obj, err := uploader.UploadStream(context.Background(), "logs/today.log", input, upload.ObjectOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(obj.GetKey(), obj.GetSize())
	// Output: logs/today.log 16000
}

// An upload interrupted for good (the network stayed down longer than the
// retry policy waits) returns an *InterruptedError; Resume with its upload
// ID and the same data sends only the chunks the server does not have.
func ExampleUploader_Resume() {
	url, stop := startExampleServer()
	defer stop()
	ctx := context.Background()
	client := ferryv1connect.NewUploadServiceClient(http.DefaultClient, url)
	data := bytes.Repeat([]byte{42}, 11<<20) // 11 MiB: chunks of 5, 5 and 1 MiB

	// Here the first chunk is sent by hand, as if an upload had stopped
	// after it.
	size := int64(len(data))
	created, err := client.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{
		Spec: &ferryv1.UploadSpec{Key: "big.bin", Size: &size, ChunkSize: 5 << 20},
	}))
	if err != nil {
		log.Fatal(err)
	}
	crc := store.CRC32C(data[:5<<20])
	if _, err := client.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{
		UploadId: created.Msg.GetUpload().GetUploadId(),
		Chunk:    &ferryv1.Chunk{Index: 0, Data: data[:5<<20], Crc32C: &crc},
	})); err != nil {
		log.Fatal(err)
	}
	err = &upload.InterruptedError{UploadID: created.Msg.GetUpload().GetUploadId(), Err: errors.New("network down")}

	uploader := upload.NewUploader(client, upload.UploaderOptions{})
	var interrupted *upload.InterruptedError
	if errors.As(err, &interrupted) {
		obj, err := uploader.Resume(ctx, interrupted.UploadID, bytes.NewReader(data), size)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(obj.GetKey(), obj.GetSize())
	}
	// Output: big.bin 11534336
}

// Sync uploads the files of a directory tree that the server does not
// already have with the same size and CRC32C: a second run sends nothing.
func ExampleSync() {
	url, stop := startExampleServer()
	defer stop()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "ferry-example-tree-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for _, name := range []string{"index.html", "css/site.css", "img/logo.svg"} {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("content of "+name), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	uploader := upload.NewUploader(ferryv1connect.NewUploadServiceClient(http.DefaultClient, url), upload.UploaderOptions{})
	objects := ferryv1connect.NewObjectServiceClient(http.DefaultClient, url)
	for range 2 {
		res, err := upload.Sync(ctx, uploader, objects, dir, "site/", upload.SyncOptions{Concurrency: 8})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("files=%d uploaded=%d skipped=%d bytes=%d\n", res.Files, res.Transferred, res.Skipped, res.Bytes)
	}
	// Output:
	// files=3 uploaded=3 skipped=0 bytes=67
	// files=3 uploaded=0 skipped=3 bytes=0
}
