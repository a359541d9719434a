package main

import (
	"flag"
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// logFlags are the logging flags every long-running command takes.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "console", "log format: console or json")
}

// build returns the logger and its level, which can be changed at run time.
func (l *logFlags) build() (*zap.Logger, zap.AtomicLevel, error) {
	level, err := zap.ParseAtomicLevel(l.level)
	if err != nil {
		return nil, level, usageErrorf("--log-level %q: want debug, info, warn or error", l.level)
	}
	var cfg zap.Config
	switch l.format {
	case "json":
		cfg = zap.NewProductionConfig()
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.Development = false
		cfg.DisableStacktrace = true
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
	default:
		return nil, level, usageErrorf("--log-format %q: want console or json", l.format)
	}
	cfg.Level = level
	log, err := cfg.Build()
	if err != nil {
		return nil, level, fmt.Errorf("build logger: %w", err)
	}
	return log, level, nil
}
