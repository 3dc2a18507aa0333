package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/download"
	"github.com/ferryhq/ferry/upload"
)

// newSyncCommand returns the sync command: upload.Sync or download.Sync,
// chosen by which argument is an existing local directory.
func newSyncCommand(stdio stdio, lookupEnv lookupEnvFunc) *cobra.Command {
	var (
		flags        clientFlags
		opts         upload.SyncOptions
		jsonOut      bool
		verbose      bool
		downloadMode bool
	)
	cmd := &cobra.Command{
		Use:   "sync [flags] LOCAL_DIR PREFIX | sync [flags] PREFIX LOCAL_DIR",
		Short: "Make the objects under PREFIX match a directory, or the reverse",
		Long: `Sync a directory tree with the objects under a key prefix.

The direction is chosen by the arguments: when the first argument is an
existing local directory, its regular files are uploaded (the file
LOCAL_DIR/a/b.txt becomes the object PREFIX + "a/b.txt"); otherwise the
second argument must be an existing local directory and the objects under
PREFIX are downloaded into it. --download forces the second direction.

A file is skipped when its counterpart has the same size and CRC32C. Files
whose key is not a valid key are skipped with a message. --delete removes
what has no counterpart (objects when uploading, files when downloading).
Up to --concurrency files move at once. The command prints a summary and
exits 1 if any file failed; the others are still transferred.

Examples:
  ferry sync ./site web/          # upload ./site to web/
  ferry sync --delete ./site web/ # and delete objects with no file
  ferry sync web/ ./site          # download web/ into ./site
  ferry sync --dry-run ./site web/`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := flags.resolve(cmd, lookupEnv)
			if err != nil {
				return err
			}
			opts.Concurrency = cfg.concurrency
			progress := newProgress(stdio.err, cfg.quiet || opts.DryRun, jsonOut)
			opts.Progress = progress.sync()
			say := progress.say(stdio.err)
			opts.Log = func(line string) {
				if verbose || opts.DryRun || strings.HasPrefix(line, "skip ") {
					say("%s", line)
				}
			}
			isDir := func(p string) bool {
				fi, err := os.Stat(p)
				return err == nil && fi.IsDir()
			}
			var res *upload.SyncResult
			switch {
			case !downloadMode && isDir(args[0]):
				u := upload.NewUploader(cfg.uploadClient(), upload.UploaderOptions{Retry: cfg.retryPolicy(stdio.err, progress)})
				res, err = upload.Sync(cmd.Context(), u, cfg.objectClient(), args[0], args[1], opts)
			case isDir(args[1]):
				d := download.NewDownloader(cfg.downloadClient(), download.DownloaderOptions{Retry: cfg.retryPolicy(stdio.err, progress)})
				res, err = download.Sync(cmd.Context(), d, cfg.objectClient(), args[0], args[1], opts)
			default:
				return usagef("neither %q nor %q is an existing directory", args[0], args[1])
			}
			progress.wait()
			if res != nil {
				if jsonOut {
					b, _ := json.Marshal(res)
					fmt.Fprintln(stdio.out, string(b))
				} else {
					fmt.Fprintf(stdio.out, "files=%d transferred=%d skipped=%d deleted=%d failed=%d bytes=%d seconds=%.3f\n",
						res.Files, res.Transferred, res.Skipped, res.Deleted, res.Failed, res.Bytes, res.Seconds)
				}
			}
			return err
		},
	}
	addClientFlags(cmd, &flags, plainCommand)
	fs := cmd.Flags()
	fs.IntVar(&flags.concurrency, "concurrency", 4, "files transferred at once")
	fs.BoolVar(&opts.Delete, "delete", false, "delete what has no counterpart on the other side")
	fs.BoolVar(&opts.DryRun, "dry-run", false, "print what would be done and do nothing")
	fs.BoolVar(&jsonOut, "json", false, "print the summary as one JSON object (files, transferred, skipped, deleted, failed, bytes, seconds; uploaded and bytes_sent, deprecated, repeat transferred and bytes) and progress as JSON lines on standard error")
	fs.BoolVarP(&verbose, "verbose", "v", false, "print each file transferred or deleted")
	fs.BoolVarP(&flags.quiet, "quiet", "q", false, "show no progress")
	fs.BoolVar(&downloadMode, "download", false, "download PREFIX into LOCAL_DIR (the arguments are PREFIX LOCAL_DIR)")
	return cmd
}
