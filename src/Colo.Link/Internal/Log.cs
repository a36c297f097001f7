using System.Net;
using Microsoft.Extensions.Logging;

namespace Colo.Link.Internal;

/// <summary>Source-generated log messages of the link (event ids 1100-1199).</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1100, Level = LogLevel.Information, Message = "Replication link connected to {Remote} (local {Local})")]
    public static partial void Connected(ILogger logger, EndPoint? remote, EndPoint? local);

    [LoggerMessage(EventId = 1101, Level = LogLevel.Debug, Message = "Connect to {Remote} failed ({Error}); retrying in {DelayMs} ms")]
    public static partial void ConnectRetry(ILogger logger, IPEndPoint remote, string error, int delayMs);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Information, Message = "Replication link listening on {Local}")]
    public static partial void Listening(ILogger logger, EndPoint? local);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Information, Message = "Replication link accepted from {Remote} (local {Local})")]
    public static partial void Accepted(ILogger logger, EndPoint? remote, EndPoint? local);

    [LoggerMessage(EventId = 1104, Message = "Replication link to {Remote} closed: {Reason}")]
    public static partial void Closed(ILogger logger, LogLevel level, EndPoint? remote, string reason);

    [LoggerMessage(EventId = 1105, Level = LogLevel.Warning, Message = "Socket option {Option} not applied: {Error}")]
    public static partial void SocketOptionFailed(ILogger logger, string option, string error);
}
