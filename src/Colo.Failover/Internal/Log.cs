using Microsoft.Extensions.Logging;

namespace Colo.Failover.Internal;

/// <summary>Source-generated log messages of the heartbeat monitor (event ids 1200-1299).</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1200, Level = LogLevel.Information, Message = "Heartbeat monitor started (interval {IntervalMs} ms, timeout {TimeoutMs} ms)")]
    public static partial void Started(ILogger logger, double intervalMs, double timeoutMs);

    [LoggerMessage(EventId = 1201, Level = LogLevel.Warning, Message = "Peer lost: {Reason}")]
    public static partial void PeerLost(ILogger logger, string reason);

    [LoggerMessage(EventId = 1202, Level = LogLevel.Error, Message = "Peer-lost callback failed")]
    public static partial void CallbackFailed(ILogger logger, Exception exception);
}
