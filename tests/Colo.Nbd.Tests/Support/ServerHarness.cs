using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Colo.Nbd.Tests.Support;

/// <summary>An <see cref="NbdServer"/> on a unix socket in a fresh temporary directory; stopped and cleaned up on dispose.</summary>
internal sealed class ServerHarness : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly string _dir;

    public ServerHarness(IBlockDevice device, ITestOutputHelper output, string export = "disk0", NbdServerOptions? options = null)
    {
        _dir = Directory.CreateTempSubdirectory("colo-nbd-test-").FullName;
        SocketPath = Path.Combine(_dir, "nbd.sock");
        Logger = new TestLogger(output);
        Server = new NbdServer(device, export, Logger, options);
        Serving = Server.ServeUnixAsync(SocketPath, _stop.Token);
        Export = export;
    }

    public string SocketPath { get; }

    public string Export { get; }

    public NbdServer Server { get; }

    public ILogger Logger { get; }

    public Task Serving { get; }

    public Task<(NbdTestClient Client, ulong Size, ushort Flags)> ConnectAndGoAsync() => NbdTestClient.ConnectAndGoAsync(SocketPath, Export);

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await Serving.WaitAsync(TimeSpan.FromSeconds(15));
        _stop.Dispose();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
