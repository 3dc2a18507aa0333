package download_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"connectrpc.com/connect"

	"github.com/ferryhq/ferry/download"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store/diskstore"
	"github.com/ferryhq/ferry/upload"
)

// startExampleServer serves the upload and download services on a disk
// store in a temporary directory, over HTTP/1.1 and h2c, and returns its
// URL and a function that stops it.
func startExampleServer() (string, func()) {
	dir, err := os.MkdirTemp("", "ferry-example-")
	if err != nil {
		log.Fatal(err)
	}
	st, err := diskstore.New(dir)
	if err != nil {
		log.Fatal(err)
	}
	uploads, err := upload.NewService(upload.Config{Store: st})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(ferryv1connect.NewUploadServiceHandler(uploads, connect.WithReadMaxBytes(upload.DefaultMaxChunkSize+1<<20)))
	mux.Handle(ferryv1connect.NewDownloadServiceHandler(download.NewService(st)))
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

// A file is downloaded over parallel ranged streams; the Downloader checks
// the whole-object CRC32C, combined from the ranges' CRC32Cs.
func ExampleDownloader_DownloadAt() {
	url, stop := startExampleServer()
	defer stop()
	ctx := context.Background()
	httpClient := h2cClient()

	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	uploader := upload.NewUploader(ferryv1connect.NewUploadServiceClient(httpClient, url, connect.WithGRPC()), upload.UploaderOptions{})
	if _, err := uploader.Upload(ctx, "data.bin", bytes.NewReader(data), int64(len(data)), upload.ObjectOptions{}); err != nil {
		log.Fatal(err)
	}

	dir, err := os.MkdirTemp("", "ferry-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	f, err := os.Create(filepath.Join(dir, "data.bin"))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()

	// WithDataBuffers lets the Downloader reuse each data message's memory.
	client := ferryv1connect.NewDownloadServiceClient(httpClient, url, connect.WithGRPC(), download.WithDataBuffers())
	downloader := download.NewDownloader(client, download.DownloaderOptions{
		Concurrency: 4,
		RangeSize:   4 << 20, // four ranges of 4 MiB
	})
	obj, err := downloader.DownloadAt(ctx, "data.bin", f)
	if err != nil {
		// An *InterruptedError tells how many bytes from the start are in
		// place: truncate f to them, and ResumeAt continues from there.
		log.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(obj.GetKey(), obj.GetSize(), fi.Size())
	// Output: data.bin 16777216 16777216
}

// Download writes an object in order to any io.Writer, such as standard
// output; here over the Connect protocol on HTTP/1.1.
func ExampleDownloader_Download() {
	url, stop := startExampleServer()
	defer stop()
	ctx := context.Background()

	uploader := upload.NewUploader(ferryv1connect.NewUploadServiceClient(http.DefaultClient, url), upload.UploaderOptions{})
	if _, err := uploader.UploadStream(ctx, "hello.txt", bytes.NewBufferString("hello, ferry\n"), upload.ObjectOptions{}); err != nil {
		log.Fatal(err)
	}

	downloader := download.NewDownloader(ferryv1connect.NewDownloadServiceClient(http.DefaultClient, url), download.DownloaderOptions{})
	if _, err := downloader.Download(ctx, "hello.txt", os.Stdout); err != nil {
		log.Fatal(err)
	}
	// Output: hello, ferry
}
