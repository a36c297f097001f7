using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Colo.Nbd.Tests.Support;

/// <summary>Writes log events to the xunit test output (visible for failing tests).</summary>
internal sealed class TestLogger(ITestOutputHelper output) : ILogger
{
    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Debug;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        try
        {
            output.WriteLine($"[{DateTime.UtcNow:HH:mm:ss.fff}] {logLevel} {eventId.Id}: {formatter(state, exception)}{(exception is null ? string.Empty : " " + exception)}");
        }
        catch (InvalidOperationException)
        {
            // Output helper used after the test finished (background close); ignore.
        }
    }
}
