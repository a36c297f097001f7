using Microsoft.Extensions.Logging;

namespace Colo.Vm.Internal;

/// <summary>Source-generated log messages of Colo.Vm (event ids 1100–1199).</summary>
internal static partial class Log
{
    [LoggerMessage(1100, LogLevel.Debug, "QMP connected to {SocketPath} after {Attempts} attempt(s)")]
    public static partial void QmpConnected(ILogger logger, string socketPath, int attempts);

    [LoggerMessage(1101, LogLevel.Trace, "QMP -> {Command} (id {Id})")]
    public static partial void QmpSend(ILogger logger, string command, long id);

    [LoggerMessage(1102, LogLevel.Debug, "QMP connection {SocketPath} closed: {Reason}")]
    public static partial void QmpClosed(ILogger logger, string socketPath, string reason);

    [LoggerMessage(1103, LogLevel.Warning, "QMP: ignoring malformed message: {Reason}")]
    public static partial void QmpBadMessage(ILogger logger, string reason);

    [LoggerMessage(1104, LogLevel.Debug, "QMP: reply with id {Id} matches no pending command (timed out or cancelled)")]
    public static partial void QmpUnmatchedReply(ILogger logger, long id);

    [LoggerMessage(1105, LogLevel.Debug, "QMP command {Command} failed: {ErrorClass}: {Description}")]
    public static partial void QmpError(ILogger logger, string command, string errorClass, string description);

    [LoggerMessage(1106, LogLevel.Trace, "QMP event {Name}")]
    public static partial void QmpEvent(ILogger logger, string name);

    [LoggerMessage(1107, LogLevel.Warning, "QMP event handler for {Name} threw")]
    public static partial void EventHandlerFailed(ILogger logger, Exception exception, string name);

    [LoggerMessage(1110, LogLevel.Information, "QEMU {Name} started, pid {Pid}: {Binary} {Args}")]
    public static partial void QemuStarted(ILogger logger, string name, int pid, string binary, string args);

    [LoggerMessage(1111, LogLevel.Information, "QEMU {Name} (pid {Pid}) exited with code {ExitCode}")]
    public static partial void QemuExited(ILogger logger, string name, int pid, int exitCode);

    [LoggerMessage(1112, LogLevel.Warning, "QEMU {Name} (pid {Pid}) killed")]
    public static partial void QemuKilled(ILogger logger, string name, int pid);

    [LoggerMessage(1113, LogLevel.Debug, "QEMU {Name} stderr: {Line}")]
    public static partial void QemuStderr(ILogger logger, string name, string line);

    [LoggerMessage(1120, LogLevel.Debug, "QEMU {Name}: captured {Bytes} bytes of device state in {Milliseconds:F2} ms")]
    public static partial void DeviceStateCaptured(ILogger logger, string name, int bytes, double milliseconds);

    [LoggerMessage(1121, LogLevel.Debug, "QEMU {Name}: loaded {Bytes} bytes of device state in {Milliseconds:F2} ms")]
    public static partial void DeviceStateLoaded(ILogger logger, string name, int bytes, double milliseconds);

    [LoggerMessage(1122, LogLevel.Warning, "QEMU {Name}: device state {Operation} failed at step {Step}")]
    public static partial void DeviceStateFailed(ILogger logger, Exception exception, string name, string operation, string step);
}
