using Microsoft.Extensions.Logging;

namespace Colo.Nbd.Internal;

/// <summary>Source-generated log messages of the NBD server (event ids 1600-1699).</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1600, Level = LogLevel.Information, Message = "NBD server exporting '{Export}' ({Size} bytes) on {Endpoint}")]
    public static partial void Listening(ILogger logger, string export, long size, string endpoint);

    [LoggerMessage(EventId = 1601, Level = LogLevel.Debug, Message = "NBD connection {Id} accepted")]
    public static partial void Accepted(ILogger logger, long id);

    [LoggerMessage(EventId = 1602, Level = LogLevel.Information, Message = "NBD connection {Id} entered transmission for '{Export}' (client flags {ClientFlags:x})")]
    public static partial void Transmission(ILogger logger, long id, string export, uint clientFlags);

    [LoggerMessage(EventId = 1603, Message = "NBD connection {Id} closed: {Reason}")]
    public static partial void Closed(ILogger logger, LogLevel level, long id, string reason);

    [LoggerMessage(EventId = 1604, Level = LogLevel.Debug, Message = "NBD connection {Id}: option {Option} answered with {Reply:x}")]
    public static partial void OptionRejected(ILogger logger, long id, uint option, uint reply);

    [LoggerMessage(EventId = 1605, Level = LogLevel.Debug, Message = "NBD connection {Id}: command {Command} flags {Flags:x} offset {Offset} length {Length} rejected with {Error}")]
    public static partial void RequestRejected(ILogger logger, long id, ushort command, ushort flags, ulong offset, uint length, NbdError error);

    [LoggerMessage(EventId = 1606, Level = LogLevel.Warning, Message = "NBD connection {Id}: command {Command} at {Offset} length {Length} failed with {Error}")]
    public static partial void DeviceFailed(ILogger logger, long id, ushort command, ulong offset, uint length, NbdError error, Exception exception);

    [LoggerMessage(EventId = 1607, Level = LogLevel.Error, Message = "NBD accept loop failed")]
    public static partial void AcceptFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 1608, Level = LogLevel.Information, Message = "NBD server on {Endpoint} stopped")]
    public static partial void Stopped(ILogger logger, string endpoint);
}
