using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;

namespace Colo.Cli;

/// <summary>Console logging for the CLI and the daemons: one line per event with a UTC timestamp.</summary>
internal static class Logging
{
    public static ILoggerFactory Create(bool verbose = false) => LoggerFactory.Create(b =>
    {
        b.SetMinimumLevel(verbose ? LogLevel.Debug : LogLevel.Information);
        b.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss.fff ";
            o.UseUtcTimestamp = true;
            o.ColorBehavior = LoggerColorBehavior.Disabled;
        });
    });
}
