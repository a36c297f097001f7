using Colo.Nbd.Tests.Support;
using Xunit.Abstractions;
using static Colo.Nbd.Tests.Support.NbdTestClient;

namespace Colo.Nbd.Tests;

/// <summary>Random mixed workloads from several pipelined connections, checked against a model of the disk.</summary>
public sealed class RandomizedTests(ITestOutputHelper output) : IDisposable
{
    private const int Clients = 4;
    private const int BlocksPerClient = 64;
    private const int BlockSize = 4096;
    private readonly string _dir = Directory.CreateTempSubdirectory("colo-nbd-rand-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("memory", 1)]
    [InlineData("file", 2)]
    [InlineData("file-async", 3)]
    public async Task PipelinedMixedOperations_FromSeveralClients_MatchTheModel(string kind, int seed)
    {
        long size = (long)Clients * BlocksPerClient * BlockSize;
        IBlockDevice device = kind switch
        {
            "memory" => new MemoryBlockDevice(size),
            "file" => RawFileBlockDevice.Create(Path.Combine(_dir, "d.raw"), size),
            _ => RawFileBlockDevice.Create(Path.Combine(_dir, "d.raw"), size, asyncIo: true),
        };
        try
        {
            await using var h = new ServerHarness(device, output);
            await Task.WhenAll(Enumerable.Range(0, Clients).Select(i => RunClientAsync(h, i, seed * 100 + i)));
        }
        finally
        {
            (device as IDisposable)?.Dispose();
        }
    }

    private static async Task RunClientAsync(ServerHarness h, int index, int seed)
    {
        var rng = new Random(seed);
        long regionStart = (long)index * BlocksPerClient * BlockSize;
        byte[][] model = Enumerable.Range(0, BlocksPerClient).Select(_ => new byte[BlockSize]).ToArray();
        (NbdTestClient c, _, _) = await h.ConnectAndGoAsync();
        await using (c)
        {
            ulong handle = 0;
            for (int round = 0; round < 20; round++)
            {
                // Up to 16 requests in flight, each on a different block so their order does not matter.
                int[] blocks = Enumerable.Range(0, BlocksPerClient).OrderBy(_ => rng.Next()).Take(rng.Next(1, 17)).ToArray();
                var pending = new Dictionary<ulong, (int Block, int Kind, byte[]? Data)>();
                foreach (int block in blocks)
                {
                    int kind = rng.Next(5);
                    ulong offset = (ulong)(regionStart + ((long)block * BlockSize));
                    handle++;
                    byte[]? data = null;
                    switch (kind)
                    {
                        case 0:
                            await c.SendRequestAsync(CmdRead, handle, offset, BlockSize);
                            break;
                        case 1:
                            data = new byte[BlockSize];
                            rng.NextBytes(data);
                            await c.SendRequestAsync(CmdWrite, handle, offset, BlockSize, rng.Next(4) == 0 ? FlagFua : (ushort)0, data);
                            break;
                        case 2:
                            await c.SendRequestAsync(CmdWriteZeroes, handle, offset, BlockSize, rng.Next(2) == 0 ? FlagNoHole : (ushort)0);
                            break;
                        case 3:
                            await c.SendRequestAsync(CmdFlush, handle, 0, 0);
                            break;
                        default:
                            data = new byte[BlockSize];
                            rng.NextBytes(data);
                            await c.SendRequestAsync(CmdWrite, handle, offset, BlockSize, 0, data);
                            break;
                    }

                    pending[handle] = (block, kind, data);
                }

                while (pending.Count > 0)
                {
                    (uint error, ulong h2) = await c.ReadReplyAsync();
                    Assert.Equal(0u, error);
                    Assert.True(pending.Remove(h2, out var p), $"unexpected handle {h2}");
                    switch (p.Kind)
                    {
                        case 0:
                            Assert.Equal(model[p.Block], await c.ReadExactAsync(BlockSize));
                            break;
                        case 1:
                        case 4:
                            model[p.Block] = p.Data!;
                            break;
                        case 2:
                            model[p.Block] = new byte[BlockSize];
                            break;
                    }
                }
            }

            // Everything written reads back.
            for (int b = 0; b < BlocksPerClient; b++)
            {
                Assert.Equal(model[b], (await c.ReadBlockAsync((ulong)(regionStart + ((long)b * BlockSize)), BlockSize)).Data);
            }
        }
    }
}
